// Printing API responses: table (aligned columns under a header), json (the protobuf
// message, proto field names, indented) and text (tab-separated rows, one per
// resource, prefixed by the collection's name like `aws --output text`).
#pragma once

#include <string>
#include <vector>

#include "cli/args.hpp"

namespace azote::cli {

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

// Columns padded to the widest cell (UTF-8 aware), two spaces apart, no trailing blanks.
std::string render_table(const Table& table);

// The protobuf JSON mapping, proto field names, defaults printed, indented; ends in '\n'.
std::string to_json(const google::protobuf::Message& msg);

// The response of rpc in the given format. Console output and metrics are printed raw in
// table and text modes.
std::string render_response(Rpc rpc, const google::protobuf::Message& response, OutputFormat format);

// The tables behind render_response, for tests.
Table instances_table(const google::protobuf::RepeatedPtrField<v1::Instance>& instances);
Table volumes_table(const google::protobuf::RepeatedPtrField<v1::Volume>& volumes);
// One row per rule (a group without rules: one row of dashes).
Table security_groups_table(const google::protobuf::RepeatedPtrField<v1::SecurityGroup>& groups);

}  // namespace azote::cli
