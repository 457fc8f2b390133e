// The response side's XML (pugixml): EC2's documents,
//
//   <?xml version="1.0" encoding="UTF-8"?>
//   <RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
//     <requestId>...</requestId> ... </RunInstancesResponse>
//
// with lists as <xxxSet><item>...</item></xxxSet>, booleans true/false and timestamps
// 2026-12-07T21:00:00.000Z; and EC2's error document with its HTTP status. Text is
// written as well-formed XML whatever it holds: bytes that are not UTF-8 and control
// characters XML 1.0 cannot carry become U+FFFD.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <pugixml.hpp>

#include "ec2api/error.hpp"
#include "ec2api/timestamp.hpp"

namespace azote::ec2api {

inline constexpr std::string_view kXmlns = "http://ec2.amazonaws.com/doc/2016-11-15/";
inline constexpr std::string_view kContentType = "text/xml;charset=UTF-8";

// One element of a document being written. Cheap to copy (a handle into the document).
class Element {
 public:
  explicit Element(pugi::xml_node node) : node_(node) {}

  // A child element, to fill.
  Element child(std::string_view name);
  // A list element's next <item>.
  Element item();
  // A list's <item>value</item>.
  Element& item_text(std::string_view value);

  // <name>value</name>; text() always (empty: <name/>), text_if() only when non-empty.
  Element& text(std::string_view name, std::string_view value);
  Element& text_if(std::string_view name, std::string_view value);
  Element& integer(std::string_view name, int64_t value);
  Element& integer_if(std::string_view name, std::optional<int64_t> value);
  Element& boolean(std::string_view name, bool value);
  Element& boolean_if(std::string_view name, std::optional<bool> value);
  Element& timestamp(std::string_view name, Timestamp value);
  Element& timestamp_if(std::string_view name, std::optional<Timestamp> value);
  Element& decimal(std::string_view name, double value);

  // <name><item>..</item>...</name> with write(Element item, const T&) for each element.
  template <class T, class F>
  Element& list(std::string_view name, const std::vector<T>& xs, F&& write) {
    Element l = child(name);
    for (const T& x : xs) write(l.item(), x);
    return *this;
  }
  // The same, left out when xs is empty.
  template <class T, class F>
  Element& list_if(std::string_view name, const std::vector<T>& xs, F&& write) {
    if (!xs.empty()) list(name, xs, write);
    return *this;
  }
  // <name><item>s</item>...</name>
  Element& strings(std::string_view name, const std::vector<std::string>& xs);

  pugi::xml_node node() const { return node_; }

 private:
  pugi::xml_node node_;
};

// A success document: <{action}Response xmlns=...><requestId>{request_id}</requestId>.
class Document {
 public:
  Document(std::string_view action, std::string_view request_id);
  Document(const Document&) = delete;
  Document& operator=(const Document&) = delete;
  // The response element, after requestId.
  Element root() { return Element(root_); }
  // The whole document, with its XML declaration.
  std::string str() const;

 private:
  pugi::xml_document doc_;
  pugi::xml_node root_;
};

// EC2's error document:
//   <?xml version="1.0" encoding="UTF-8"?>
//   <Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors>
//   <RequestID>..</RequestID></Response>
std::string error_document(const Ec2Error& e, std::string_view request_id);

// What goes on the wire: status, Content-Type kContentType, body.
struct Reply {
  int status = 200;
  std::string body;
};
Reply ok_reply(std::string body);
Reply error_reply(const Ec2Error& e, std::string_view request_id);

// Text made safe for XML 1.0 (see the top of this file).
std::string xml_safe(std::string_view s);

// A request id in EC2's form (a UUID, version 4) from 16 random bytes; random_request_id()
// takes them from getrandom(2).
std::string request_id_from_bytes(std::span<const uint8_t, 16> bytes);
std::string random_request_id();

// Standard base64 with padding (GetConsoleOutput's output).
std::string base64_encode(std::string_view bytes);

}  // namespace azote::ec2api
