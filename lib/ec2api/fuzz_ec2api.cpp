// libFuzzer target for the request side and the XML writer: any bytes as a form body.
// Params::parse either refuses with an EC2 error or yields pairs whose names and values
// are UTF-8; the structure-list readers (generic and shared) never crash and list each
// index once, in order; check_all_used agrees with unused(); every decoded value, and
// every error message, written into a document comes back from pugixml (keeping
// whitespace-only text, as botocore's parser does) as xml_safe(text),
// and xml_safe is idempotent. Never a crash, a leak or undefined behaviour.
// Seeds: botocore's own bodies (botocore_tool.py seeds fuzz_seeds/) and a few malformed ones.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ec2api/params.hpp"
#include "ec2api/request.hpp"
#include "ec2api/xml.hpp"

namespace {

using namespace azote::ec2api;

void check(bool ok) {
  if (!ok) std::abort();
}

void check_error(const Ec2Error& e) {
  check(!e.code.empty() && !e.message.empty());
  const int s = e.http_status();
  check(s == 400 || s == 403 || s == 412 || s == 500 || s == 503);
  const std::string doc = error_document(e, "rid");
  pugi::xml_document x;
  check(x.load_buffer(doc.data(), doc.size(), pugi::parse_default | pugi::parse_ws_pcdata));
  const pugi::xml_node err = x.child("Response").child("Errors").child("Error");
  check(err.child_value("Code") == xml_safe(e.code));
  check(err.child_value("Message") == xml_safe(e.message));
}

template <class T>
void drain(const azote::Result<T, Ec2Error>& r) {
  if (!r.ok()) check_error(r.error());
}

// Walks every list, structure and scalar a name could belong to, like a handler might.
void walk(const Node& n, std::string_view rest, int depth) {
  if (depth > 8) return;
  const size_t dot = rest.find('.');
  const std::string_view head = rest.substr(0, dot);
  if (head.empty()) return;
  (void)n.get(head);
  (void)n.has(head);
  drain(n.get_int(head));
  drain(n.get_bool(head));
  (void)n.strings(head);
  if (dot == std::string_view::npos) return;
  const std::string_view tail = rest.substr(dot + 1);
  walk(n.sub(head), tail, depth + 1);
  const auto items = n.list(head);
  for (size_t i = 1; i < items.size(); ++i) check(items[i - 1].prefix() != items[i].prefix());
  const size_t dot2 = tail.find('.');
  if (dot2 != std::string_view::npos && !items.empty()) walk(items.front(), tail.substr(dot2 + 1), depth + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view form(reinterpret_cast<const char*>(data), size);
  Limits limits;
  limits.max_bytes = 8192;
  limits.max_params = 256;
  limits.max_name_bytes = 128;
  auto parsed = Params::parse(form, limits);
  if (!parsed.ok()) {
    check_error(parsed.error());
    return 0;
  }
  const Params& p = *parsed;
  check(p.entries().size() <= limits.max_params);
  drain(p.check_action_version());
  drain(read_filters(p.root()));
  drain(read_tags(p.root()));
  drain(read_tag_specifications(p.root()));
  drain(read_ip_permissions(p.root()));
  drain(read_block_device_mappings(p.root()));
  const auto first = p.check_all_used();
  if (first.ok()) {
    check(p.unused().empty());
  } else {
    check(!p.unused().empty());
    check_error(first.error());
  }
  for (const auto& e : p.entries()) walk(p.root(), e.name, 0);

  Document d("DescribeTags", "rid");
  Element set = d.root().child("tagSet");
  for (const auto& e : p.entries()) set.item().text("key", e.name).text("value", e.value);
  const std::string doc = d.str();
  pugi::xml_document x;
  check(x.load_buffer(doc.data(), doc.size(), pugi::parse_default | pugi::parse_ws_pcdata));
  pugi::xml_node item = x.child("DescribeTagsResponse").child("tagSet").child("item");
  for (const auto& e : p.entries()) {
    check(static_cast<bool>(item));
    const std::string value = xml_safe(e.value);
    check(xml_safe(value) == value);
    check(item.child_value("key") == xml_safe(e.name));
    check(item.child_value("value") == value);
    item = item.next_sibling("item");
  }
  return 0;
}
