// The request side of EC2's Query protocol: an application/x-www-form-urlencoded body (or
// a GET query string) decoded into Params, and Node, a view that reads EC2's flattened
// names as nested structures and lists:
//
//   InstanceId.1=i-a&InstanceId.2=i-b              root().strings("InstanceId")
//   Filter.1.Name=tag:Env&Filter.1.Value.1=prod   for (Node f : root().list("Filter"))
//                                                   f.get("Name"), f.strings("Value")
//   BlockDeviceMapping.1.Ebs.VolumeSize=20         list("BlockDeviceMapping")[0].sub("Ebs").get_int("VolumeSize")
//
// Lists are numbered from 1. botocore numbers them 1..n without gaps and sends nothing at all
// for an empty list; a list here is the members with a valid index (decimal, no leading zero,
// 1..kMaxListIndex) in increasing order of index, so gaps are tolerated and closed up. A name
// whose index is not valid ("InstanceId.0", "InstanceId.01", "InstanceId.x") belongs to no
// list and is left unread.
//
// Every accessor marks what it reads; after reading a request, check_all_used() answers
// EC2's UnknownParameter for the first parameter nothing read (a misspelled or unsupported
// name, a member of a structure the action does not have). Action, Version and a presigned
// query's X-Amz-* authentication parameters count as read.
//
// EC2 takes a request's parameters from a GET's query string or a POST's form body (botocore
// and the CLI POST); a server accepting both in one request joins them with '&' before
// parse(), so that a name given in both is refused as repeated.
//
// A Node points into its Params: the Params must outlive it and not move.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"
#include "ec2api/error.hpp"
#include "ec2api/timestamp.hpp"

namespace azote::ec2api {

inline constexpr std::string_view kApiVersion = "2016-11-15";
inline constexpr uint32_t kMaxListIndex = 100000;

// Bounds on what parse() accepts (InvalidRequest beyond them).
struct Limits {
  size_t max_bytes = 1024 * 1024;  // the encoded form
  size_t max_params = 4096;        // name=value pairs
  size_t max_name_bytes = 512;     // one decoded name
};

class Params;

class Node {
 public:
  // This node's prefix: "" at the top, "Filter.2." for the second filter.
  const std::string& prefix() const { return prefix_; }
  // The full parameter name of `member` under this node ("Filter.2.Name").
  std::string name(std::string_view member) const;

  // A scalar member; nullopt when absent. Marks it read.
  std::optional<std::string_view> get(std::string_view member) const;
  // A scalar member that must be present: MissingParameter otherwise.
  Result<std::string_view, Ec2Error> required(std::string_view member) const;
  // An integer in [lo, hi] (decimal, optional '-'): InvalidParameterValue naming the parameter
  // otherwise. The default range is EC2's Integer (32 bits).
  Result<std::optional<int64_t>, Ec2Error> get_int(std::string_view member,
                                                   int64_t lo = std::numeric_limits<int32_t>::min(),
                                                   int64_t hi = std::numeric_limits<int32_t>::max()) const;
  // "true" or "false" (any case): InvalidParameterValue otherwise.
  Result<std::optional<bool>, Ec2Error> get_bool(std::string_view member) const;
  // ISO 8601 as botocore sends it ("2026-12-07T21:00:00Z", optional fraction).
  Result<std::optional<Timestamp>, Ec2Error> get_timestamp(std::string_view member) const;

  // Whether any parameter is `member` itself or lies beneath it ("Ebs" for "Ebs.VolumeSize").
  bool has(std::string_view member) const;
  // A nested structure: the node of prefix "<prefix><member>.".
  Node sub(std::string_view member) const;
  // A list of structures: one node per valid index of "<member>.N.<anything>", by index.
  std::vector<Node> list(std::string_view member) const;
  // A list of scalars: the values of "<member>.N", by index. Marks them read.
  std::vector<std::string_view> strings(std::string_view member) const;

 private:
  friend class Params;
  Node(const Params* p, std::string prefix) : p_(p), prefix_(std::move(prefix)) {}
  const Params* p_;
  std::string prefix_;
};

class Params {
 public:
  struct Entry {
    std::string name;
    std::string value;
  };

  // Percent-decoding, '+' as a space, '&' between pairs (empty pairs skipped), a pair
  // without '=' has an empty value. Refused: more than limits (InvalidRequest), a bad
  // %-escape, an empty or repeated name, names or values that are not UTF-8, control
  // characters in a name (MalformedQueryString).
  static Result<Params, Ec2Error> parse(std::string_view form, const Limits& limits = {});

  // "" when absent.
  std::string_view action() const;
  std::string_view version() const;
  // MissingAction without Action, MissingParameter without Version, NoSuchVersion for
  // another version than `version`.
  Result<void, Ec2Error> check_action_version(std::string_view version = kApiVersion) const;

  Node root() const { return Node(this, ""); }
  // Shortcuts on root().
  std::optional<std::string_view> get(std::string_view name) const { return root().get(name); }
  Result<std::string_view, Ec2Error> required(std::string_view name) const { return root().required(name); }
  Result<std::optional<int64_t>, Ec2Error> get_int(std::string_view name,
                                                   int64_t lo = std::numeric_limits<int32_t>::min(),
                                                   int64_t hi = std::numeric_limits<int32_t>::max()) const {
    return root().get_int(name, lo, hi);
  }
  Result<std::optional<bool>, Ec2Error> get_bool(std::string_view name) const { return root().get_bool(name); }
  std::vector<Node> list(std::string_view name) const { return root().list(name); }
  std::vector<std::string_view> strings(std::string_view name) const { return root().strings(name); }

  // Every pair, in request order.
  const std::vector<Entry>& entries() const { return entries_; }
  // Names nothing has read yet, in request order.
  std::vector<std::string_view> unused() const;
  // UnknownParameter naming the first unused parameter, if any.
  Result<void, Ec2Error> check_all_used() const;

 private:
  friend class Node;
  // Index in entries_ of `name`, marking it read.
  std::optional<size_t> take(std::string_view name) const;
  // [first, last) of by_name_ for the names starting with `prefix`.
  std::pair<size_t, size_t> range(std::string_view prefix) const;

  std::vector<Entry> entries_;
  std::vector<uint32_t> by_name_;  // entries_ indices sorted by name
  mutable std::vector<char> used_;
};

}  // namespace azote::ec2api
