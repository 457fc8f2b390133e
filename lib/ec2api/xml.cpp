#include "ec2api/xml.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <random>

namespace azote::ec2api {

namespace {

class StringWriter : public pugi::xml_writer {
 public:
  explicit StringWriter(std::string& out) : out_(out) {}
  void write(const void* data, size_t size) override { out_.append(static_cast<const char*>(data), size); }

 private:
  std::string& out_;
};

void add_declaration(pugi::xml_document& doc) {
  pugi::xml_node decl = doc.append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
}

// pugixml writes a CR in text as is, which every XML parser reads back as a LF (end-of-line
// normalisation); as a character reference it survives. Only text can hold one here.
std::string save(const pugi::xml_document& doc) {
  std::string raw;
  StringWriter w(raw);
  doc.save(w, "", pugi::format_raw, pugi::encoding_utf8);
  if (raw.find('\r') == std::string::npos) return raw;
  std::string out;
  out.reserve(raw.size() + 16);
  for (char c : raw) {
    if (c == '\r') {
      out += "&#13;";
    } else {
      out += c;
    }
  }
  return out;
}

void set_text(pugi::xml_node n, std::string_view value) {
  if (value.empty()) return;
  const std::string safe = xml_safe(value);
  n.append_child(pugi::node_pcdata).set_value(safe.c_str(), safe.size());
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

constexpr uint32_t kReplacement = 0xfffd;

}  // namespace

std::string xml_safe(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      // XML 1.0 Char: tab, LF, CR and from 0x20 on.
      append_utf8(out, (c >= 0x20 || c == '\t' || c == '\n' || c == '\r') ? c : kReplacement);
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07u;
    }
    bool ok = n > 0 && i + n < s.size();
    for (size_t k = 1; ok && k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xc0u) == 0x80u;
      cp = (cp << 6) | (cc & 0x3fu);
    }
    if (ok && ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
               (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff))
      ok = false;
    if (!ok) {
      append_utf8(out, kReplacement);
      ++i;  // resynchronise on the next byte
      continue;
    }
    out.append(s.substr(i, n + 1));
    i += n + 1;
  }
  return out;
}

// ---- Element ----

Element Element::child(std::string_view name) { return Element(node_.append_child(std::string(name).c_str())); }

Element Element::item() { return child("item"); }

Element& Element::item_text(std::string_view value) {
  set_text(item().node(), value);
  return *this;
}

Element& Element::text(std::string_view name, std::string_view value) {
  set_text(child(name).node(), value);
  return *this;
}

Element& Element::text_if(std::string_view name, std::string_view value) {
  if (!value.empty()) text(name, value);
  return *this;
}

Element& Element::integer(std::string_view name, int64_t value) { return text(name, std::to_string(value)); }

Element& Element::integer_if(std::string_view name, std::optional<int64_t> value) {
  if (value) integer(name, *value);
  return *this;
}

Element& Element::boolean(std::string_view name, bool value) { return text(name, value ? "true" : "false"); }

Element& Element::boolean_if(std::string_view name, std::optional<bool> value) {
  if (value) boolean(name, *value);
  return *this;
}

Element& Element::timestamp(std::string_view name, Timestamp value) { return text(name, format_timestamp(value)); }

Element& Element::timestamp_if(std::string_view name, std::optional<Timestamp> value) {
  if (value) timestamp(name, *value);
  return *this;
}

Element& Element::decimal(std::string_view name, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15g", value);
  return text(name, buf);
}

Element& Element::strings(std::string_view name, const std::vector<std::string>& xs) {
  Element l = child(name);
  for (const std::string& x : xs) l.item_text(x);
  return *this;
}

// ---- documents ----

Document::Document(std::string_view action, std::string_view request_id) {
  add_declaration(doc_);
  root_ = doc_.append_child((std::string(action) + "Response").c_str());
  root_.append_attribute("xmlns") = std::string(kXmlns).c_str();
  Element(root_).text("requestId", request_id);
}

std::string Document::str() const { return save(doc_); }

std::string error_document(const Ec2Error& e, std::string_view request_id) {
  pugi::xml_document doc;
  add_declaration(doc);
  pugi::xml_node response = doc.append_child("Response");
  Element error = Element(response).child("Errors").child("Error");
  error.text("Code", e.code).text("Message", e.message);
  Element(response).text("RequestID", request_id);
  return save(doc);
}

Reply ok_reply(std::string body) { return Reply{200, std::move(body)}; }

Reply error_reply(const Ec2Error& e, std::string_view request_id) {
  return Reply{e.http_status(), error_document(e, request_id)};
}

std::string request_id_from_bytes(std::span<const uint8_t, 16> bytes) {
  std::array<uint8_t, 16> b;
  for (size_t i = 0; i < 16; ++i) b[i] = bytes[i];
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[b[i] >> 4];
    out += kHex[b[i] & 0x0f];
  }
  return out;
}

std::string random_request_id() {
  std::array<uint8_t, 16> b{};
  size_t got = 0;
  while (got < b.size()) {
    const ssize_t n = ::getrandom(b.data() + got, b.size() - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      break;
    }
  }
  if (got < b.size()) {  // no getrandom(2): the C++ library's source
    std::random_device rd;
    for (auto& x : b) x = static_cast<uint8_t>(rd());
  }
  return request_id_from_bytes(b);
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16 |
                       static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8 |
                       static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace azote::ec2api
