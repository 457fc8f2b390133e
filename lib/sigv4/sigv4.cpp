#include "sigv4/sigv4.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "base/hex.hpp"

namespace azote::sigv4 {
namespace {

constexpr std::string_view kTerminator = "aws4_request";
constexpr char kHexUpper[] = "0123456789ABCDEF";

Unexpected<SigV4Error> fail(Code code, std::string message) { return make_error(code, std::move(message)); }

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || is_digit(c); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }
bool is_unreserved(unsigned char c) {
  return is_alnum(static_cast<char>(c)) || c == '-' || c == '.' || c == '_' || c == '~';
}
// RFC 9110 token characters, lowercase letters only (a signed header name).
bool is_lower_token_char(char c) {
  if (is_lower_alnum(c)) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}
// A name SignedHeaders may list (and so one sign() can sign).
constexpr size_t kMaxHeaderName = 256;
bool valid_signed_name(std::string_view n) {
  return !n.empty() && n.size() <= kMaxHeaderName && std::all_of(n.begin(), n.end(), is_lower_token_char);
}
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_lower(c);
  return out;
}
bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return hex_digit(c) >= 0; });
}

// A piece of client input made safe for an error message: printable ASCII only, bounded.
std::string shown(std::string_view s, size_t max = 64) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHexUpper[c >> 4];
      out += kHexUpper[c & 15];
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits on `sep`, every piece kept (also empty ones).
template <class F>
void split(std::string_view s, char sep, F&& f) {
  size_t start = 0;
  while (true) {
    const size_t end = s.find(sep, start);
    if (end == std::string_view::npos) {
      f(s.substr(start));
      return;
    }
    f(s.substr(start, end - start));
    start = end + 1;
  }
}

// Wipes a secret-holding buffer when it goes out of scope.
template <class T>
struct Wipe {
  T& buf;
  ~Wipe() { OPENSSL_cleanse(buf.data(), buf.size()); }
};

void hmac_sha256(const void* key, size_t key_len, std::string_view msg, uint8_t out[32]) {
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key, static_cast<int>(key_len), reinterpret_cast<const unsigned char*>(msg.data()),
           msg.size(), out, &len) == nullptr ||
      len != 32) {
    std::abort();  // only an allocation failure inside OpenSSL: no safe way on
  }
}

// ---- requests ----------------------------------------------------------------------------

struct Header {
  std::string name;  // lowercase
  std::string_view value;
};

Result<std::vector<Header>, SigV4Error> index_headers(const Request& req, const Limits& limits) {
  if (req.headers.size() > limits.max_headers)
    return fail(Code::kIncompleteSignature, "too many headers (" + std::to_string(req.headers.size()) + " > " +
                                                std::to_string(limits.max_headers) + ")");
  size_t bytes = 0;
  for (const auto& [n, v] : req.headers) bytes += n.size() + v.size();
  if (bytes > limits.max_header_bytes)
    return fail(Code::kIncompleteSignature, "headers too large (" + std::to_string(bytes) + " bytes > " +
                                                std::to_string(limits.max_header_bytes) + ")");
  std::vector<Header> out;
  out.reserve(req.headers.size());
  for (const auto& [n, v] : req.headers) out.push_back(Header{lower(n), v});
  return out;
}

Result<void, SigV4Error> check_request_line(const Request& req, const Limits& limits) {
  if (req.method.empty() || req.method.size() > limits.max_method_bytes)
    return fail(Code::kIncompleteSignature, "request method missing or longer than " +
                                                std::to_string(limits.max_method_bytes) + " bytes");
  if (req.path.size() > limits.max_path_bytes)
    return fail(Code::kIncompleteSignature, "request path too long (" + std::to_string(req.path.size()) +
                                                " bytes > " + std::to_string(limits.max_path_bytes) + ")");
  if (req.query.size() > limits.max_query_bytes)
    return fail(Code::kMalformedQueryString, "query string too long (" + std::to_string(req.query.size()) +
                                                 " bytes > " + std::to_string(limits.max_query_bytes) + ")");
  return {};
}

std::vector<std::string_view> values_of(const std::vector<Header>& headers, std::string_view name) {
  std::vector<std::string_view> out;
  for (const Header& h : headers)
    if (h.name == name) out.push_back(h.value);
  return out;
}

// At most one header called `name`: its value, or nullopt. More than one: an error.
Result<std::optional<std::string_view>, SigV4Error> single_header(const std::vector<Header>& headers,
                                                                  std::string_view name) {
  const auto values = values_of(headers, name);
  if (values.size() > 1)
    return fail(Code::kIncompleteSignature, "header " + std::string(name) + " appears " +
                                                std::to_string(values.size()) + " times");
  if (values.empty()) return std::optional<std::string_view>{};
  return std::optional<std::string_view>{values[0]};
}

using Param = std::pair<std::string, std::string>;


// The query's parameters, decoded, in their order; empty pieces ("a=1&&b=2") skipped.
Result<std::vector<Param>, SigV4Error> parse_query(std::string_view raw, const Limits& limits) {
  if (raw.size() > limits.max_query_bytes)
    return fail(Code::kMalformedQueryString, "query string too long (" + std::to_string(raw.size()) +
                                                 " bytes > " + std::to_string(limits.max_query_bytes) + ")");
  std::vector<Param> out;
  bool ok = true;
  std::string bad;
  split(raw, '&', [&](std::string_view piece) {
    if (!ok || piece.empty()) return;
    if (out.size() == limits.max_query_params) {
      ok = false;
      bad = "more than " + std::to_string(limits.max_query_params) + " query parameters";
      return;
    }
    const size_t eq = piece.find('=');
    const std::string_view name = piece.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view{} : piece.substr(eq + 1);
    Param p;
    if (!form_decode(name, p.first) || !form_decode(value, p.second)) {
      ok = false;
      bad = "query parameter '" + shown(piece) + "' has an invalid percent-encoding";
      return;
    }
    out.push_back(std::move(p));
  });
  if (!ok) return fail(Code::kMalformedQueryString, bad);
  return out;
}

std::string canonical_query_of(const std::vector<Param>& params, bool presigned) {
  std::vector<Param> encoded;
  encoded.reserve(params.size());
  for (const auto& [name, value] : params) {
    if (presigned && name == "X-Amz-Signature") continue;
    encoded.emplace_back(uri_encode(name, false), uri_encode(value, false));
  }
  std::sort(encoded.begin(), encoded.end());
  std::string out;
  for (const auto& [name, value] : encoded) {
    if (!out.empty()) out += '&';
    out += name;
    out += '=';
    out += value;
  }
  return out;
}

Result<std::string, SigV4Error> build_canonical_request(const Request& req, const std::vector<Header>& headers,
                                                        const std::vector<Param>& params,
                                                        const std::vector<std::string>& signed_headers,
                                                        std::string_view payload_hash, bool presigned) {
  std::string out = req.method;
  out += '\n';
  out += canonical_uri(req.path);
  out += '\n';
  out += canonical_query_of(params, presigned);
  out += '\n';
  for (const std::string& name : signed_headers) {
    bool found = false;
    out += name;
    out += ':';
    for (const Header& h : headers) {
      if (h.name != name) continue;
      if (found) out += ',';
      out += trim_all(h.value);
      found = true;
    }
    if (!found) return fail(Code::kAuthFailure, "signed header '" + shown(name) + "' is not in the request");
    out += '\n';
  }
  out += '\n';
  for (size_t i = 0; i < signed_headers.size(); ++i) {
    if (i > 0) out += ';';
    out += signed_headers[i];
  }
  out += '\n';
  out += payload_hash;
  return out;
}

bool valid_scope_part(std::string_view s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_lower_alnum(c) || c == '-'; });
}

Result<void, SigV4Error> check_credential(const Credential& c) {
  if (c.access_key_id.empty() || c.access_key_id.size() > 128 ||
      !std::all_of(c.access_key_id.begin(), c.access_key_id.end(), is_alnum))
    return fail(Code::kIncompleteSignature,
                "Credential's access key id '" + shown(c.access_key_id) + "' is not 1 to 128 letters and digits");
  if (c.date.size() != 8 || !std::all_of(c.date.begin(), c.date.end(), is_digit))
    return fail(Code::kIncompleteSignature, "Credential's date '" + shown(c.date) + "' is not YYYYMMDD");
  if (!valid_scope_part(c.region))
    return fail(Code::kIncompleteSignature, "Credential's region '" + shown(c.region) + "' is malformed");
  if (!valid_scope_part(c.service))
    return fail(Code::kIncompleteSignature, "Credential's service '" + shown(c.service) + "' is malformed");
  return {};
}

bool skipped_when_signing(std::string_view lname) {
  return lname == "authorization" || lname == "user-agent" || lname == "expect" || lname == "x-amzn-trace-id";
}

Result<std::vector<std::string>, SigV4Error> headers_to_sign(const std::vector<Header>& headers,
                                                             const Limits& limits) {
  std::vector<std::string> names;
  bool host = false;
  for (const Header& h : headers) {
    if (skipped_when_signing(h.name)) continue;
    if (!valid_signed_name(h.name))
      return fail(Code::kIncompleteSignature, "header name '" + shown(h.name) + "' cannot be signed");
    host = host || h.name == "host";
    names.push_back(h.name);
  }
  if (!host) return fail(Code::kIncompleteSignature, "the request has no Host header to sign");
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  if (names.size() > limits.max_signed_headers)
    return fail(Code::kIncompleteSignature, "more than " + std::to_string(limits.max_signed_headers) +
                                                " headers to sign");
  return names;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ';';
    out += n;
  }
  return out;
}

std::string sign_string(std::string_view secret, const Credential& c, std::string_view amz_date,
                        std::string_view canonical) {
  SigningKey key = signing_key(secret, c.date, c.region, c.service);
  Wipe<SigningKey> wipe{key};
  return signature(key, string_to_sign(amz_date, c.scope(), canonical));
}

void erase_headers(Request& req, std::initializer_list<std::string_view> lnames) {
  std::erase_if(req.headers, [&](const auto& h) {
    const std::string l = lower(h.first);
    return std::find(lnames.begin(), lnames.end(), l) != lnames.end();
  });
}

bool valid_date_fields(int y, int mo, int d, int h, int mi, int s) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return false;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= kDays[mo - 1] + (mo == 2 && leap ? 1 : 0);
}

std::optional<std::time_t> from_fields(int y, int mo, int d, int h, int mi, int s) {
  if (!valid_date_fields(y, mo, d, h, mi, s)) return std::nullopt;
  struct tm tm {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return timegm(&tm);
}

// `n` decimal digits at s[pos...]; -1 if any is not a digit.
int digits(std::string_view s, size_t pos, size_t n) {
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (pos + i >= s.size() || !is_digit(s[pos + i])) return -1;
    v = v * 10 + (s[pos + i] - '0');
  }
  return v;
}

std::string skew_text(std::chrono::seconds skew) {
  if (skew.count() % 60 == 0) return std::to_string(skew.count() / 60) + " min.";
  return std::to_string(skew.count()) + " s";
}

// What verify() needs from either form of authentication.
struct Claim {
  Credential credential;
  std::vector<std::string> signed_headers;
  std::string signature;  // 64 hex digits
  std::time_t timestamp = 0;
  std::optional<int64_t> expires;  // presigned only, when given
  std::string session_token;
  bool presigned = false;
};

Result<Claim, SigV4Error> claim_from_header(std::string_view authorization, const std::vector<Header>& headers,
                                            const Limits& limits) {
  AZOTE_TRY(auth, parse_authorization(authorization, limits));
  Claim c;
  c.credential = std::move(auth.credential);
  c.signed_headers = std::move(auth.signed_headers);
  c.signature = std::move(auth.signature);

  AZOTE_TRY(amz_date, single_header(headers, "x-amz-date"));
  std::string date_header;
  if (amz_date) {
    const auto t = parse_amz_date(trim_all(*amz_date));
    if (!t)
      return fail(Code::kIncompleteSignature,
                  "X-Amz-Date '" + shown(*amz_date) + "' is not an ISO 8601 basic date (YYYYMMDDTHHMMSSZ)");
    c.timestamp = *t;
    date_header = "x-amz-date";
  } else {
    AZOTE_TRY(date, single_header(headers, "date"));
    if (!date)
      return fail(Code::kIncompleteSignature,
                  "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header");
    const auto t = parse_http_date(trim_all(*date));
    if (!t) return fail(Code::kIncompleteSignature, "Date header '" + shown(*date) + "' is not an HTTP date");
    c.timestamp = *t;
    date_header = "date";
  }
  const auto& sh = c.signed_headers;
  if (!std::binary_search(sh.begin(), sh.end(), std::string("host")))
    return fail(Code::kIncompleteSignature,
                "'host' must be a signed header (SignedHeaders=" + shown(join_names(sh)) + ")");
  if (!std::binary_search(sh.begin(), sh.end(), date_header))
    return fail(Code::kIncompleteSignature, "'" + date_header + "' must be a signed header when it dates the request");

  AZOTE_TRY(token, single_header(headers, "x-amz-security-token"));
  if (token) c.session_token = trim_all(*token);
  return c;
}

Result<Claim, SigV4Error> claim_from_query(const std::vector<Param>& params, const Options& options) {
  struct Slot {
    std::string_view name;
    const std::string* value = nullptr;
  };
  Slot algorithm{"X-Amz-Algorithm"}, credential{"X-Amz-Credential"}, date{"X-Amz-Date"}, expires{"X-Amz-Expires"},
      signed_headers{"X-Amz-SignedHeaders"}, sig{"X-Amz-Signature"}, token{"X-Amz-Security-Token"};
  for (Slot* s : {&algorithm, &credential, &date, &expires, &signed_headers, &sig, &token}) {
    for (const auto& [name, value] : params) {
      if (name != s->name) continue;
      if (s->value != nullptr)
        return fail(Code::kIncompleteSignature, "query parameter " + std::string(s->name) + " appears more than once");
      s->value = &value;
    }
  }
  std::string missing;
  for (const Slot* s : {&algorithm, &credential, &sig, &date, &signed_headers})
    if (s->value == nullptr) missing += (missing.empty() ? "" : ", ") + std::string(s->name);
  if (!missing.empty())
    return fail(Code::kIncompleteSignature, "presigned request lacks the query parameter(s) " + missing);
  if (*algorithm.value != kAlgorithm)
    return fail(Code::kIncompleteSignature,
                "X-Amz-Algorithm '" + shown(*algorithm.value) + "' is not supported (only AWS4-HMAC-SHA256)");

  Claim c;
  c.presigned = true;
  AZOTE_TRY(cred, parse_credential(*credential.value));
  c.credential = std::move(cred);
  AZOTE_TRY(names, parse_signed_headers(*signed_headers.value, options.limits));
  c.signed_headers = std::move(names);
  if (!is_hex64(*sig.value))
    return fail(Code::kIncompleteSignature, "X-Amz-Signature is not 64 hexadecimal digits");
  c.signature = lower(*sig.value);
  const auto t = parse_amz_date(*date.value);
  if (!t)
    return fail(Code::kIncompleteSignature,
                "X-Amz-Date '" + shown(*date.value) + "' is not an ISO 8601 basic date (YYYYMMDDTHHMMSSZ)");
  c.timestamp = *t;
  if (expires.value != nullptr) {
    const std::string& e = *expires.value;
    int64_t v = 0;
    bool ok = !e.empty() && e.size() <= 10 && std::all_of(e.begin(), e.end(), is_digit);
    for (char ch : e) v = ok ? v * 10 + (ch - '0') : 0;
    if (!ok || v < 1 || v > options.max_expires.count())
      return fail(Code::kIncompleteSignature, "X-Amz-Expires '" + shown(e) + "' must be between 1 and " +
                                                  std::to_string(options.max_expires.count()) + " seconds");
    c.expires = v;
  }
  if (!std::binary_search(c.signed_headers.begin(), c.signed_headers.end(), std::string("host")))
    return fail(Code::kIncompleteSignature, "'host' must be a signed header (X-Amz-SignedHeaders=" +
                                                shown(*signed_headers.value) + ")");
  if (token.value != nullptr) c.session_token = *token.value;
  return c;
}

Result<void, SigV4Error> check_time(const Claim& c, std::time_t now, const Options& options) {
  const int64_t skew = options.max_skew.count();
  const int64_t t = c.timestamp;
  const int64_t n = now;
  if (t > n + skew)
    return fail(Code::kRequestExpired,
                "Signature not yet current: " + format_amz_date(c.timestamp) + " is still later than " +
                    format_amz_date(static_cast<std::time_t>(n + skew)) + " (" + format_amz_date(now) + " + " +
                    skew_text(options.max_skew) + ")");
  if (c.expires) {
    if (n > t + *c.expires)
      return fail(Code::kRequestExpired, "Request has expired: signed at " + format_amz_date(c.timestamp) +
                                             " for " + std::to_string(*c.expires) + " seconds, now " +
                                             format_amz_date(now));
  } else if (n > t + skew) {
    return fail(Code::kRequestExpired,
                "Signature expired: " + format_amz_date(c.timestamp) + " is now earlier than " +
                    format_amz_date(static_cast<std::time_t>(n - skew)) + " (" + format_amz_date(now) + " - " +
                    skew_text(options.max_skew) + ")");
  }
  return {};
}

}  // namespace

// ---- codes --------------------------------------------------------------------------------

const char* code_name(Code c) {
  switch (c) {
    case Code::kMissingAuthenticationToken: return "MissingAuthenticationToken";
    case Code::kIncompleteSignature: return "IncompleteSignature";
    case Code::kAuthFailure: return "AuthFailure";
    case Code::kRequestExpired: return "RequestExpired";
    case Code::kMalformedQueryString: return "MalformedQueryString";
  }
  return "AuthFailure";
}

int http_status(Code c) {
  switch (c) {
    case Code::kMissingAuthenticationToken:
    case Code::kAuthFailure: return 401;
    case Code::kIncompleteSignature:
    case Code::kRequestExpired:
    case Code::kMalformedQueryString: return 400;
  }
  return 400;
}

// ---- parsing --------------------------------------------------------------------------------

std::string Credential::scope() const {
  return date + "/" + region + "/" + service + "/" + std::string(kTerminator);
}

Result<Credential, SigV4Error> parse_credential(std::string_view text) {
  std::vector<std::string_view> parts;
  split(text, '/', [&](std::string_view p) {
    if (parts.size() <= 5) parts.push_back(p);
  });
  if (parts.size() != 5)
    return fail(Code::kIncompleteSignature, "Credential '" + shown(text, 128) +
                                                "' is not <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request");
  if (parts[4] != kTerminator)
    return fail(Code::kIncompleteSignature,
                "Credential should be scoped with a valid terminator: 'aws4_request', not '" + shown(parts[4]) + "'");
  Credential c{std::string(parts[0]), std::string(parts[1]), std::string(parts[2]), std::string(parts[3])};
  AZOTE_TRYV(check_credential(c));
  return c;
}

Result<std::vector<std::string>, SigV4Error> parse_signed_headers(std::string_view text, const Limits& limits) {
  std::vector<std::string> names;
  std::string bad;
  split(text, ';', [&](std::string_view n) {
    if (!bad.empty()) return;
    if (names.size() == limits.max_signed_headers) {
      bad = "more than " + std::to_string(limits.max_signed_headers) + " signed headers";
    } else if (!valid_signed_name(n)) {
      bad = "signed header name '" + shown(n) + "' is not a lowercase header name";
    } else if (!names.empty() && !(names.back() < n)) {
      bad = "SignedHeaders must be sorted and unique ('" + shown(names.back()) + "' before '" + shown(n) + "')";
    } else {
      names.emplace_back(n);
    }
  });
  if (!bad.empty()) return fail(Code::kIncompleteSignature, bad);
  return names;
}

Result<Authorization, SigV4Error> parse_authorization(std::string_view value, const Limits& limits) {
  value = trim_ows(value);
  const size_t sp = value.find_first_of(" \t");
  const std::string_view algorithm = value.substr(0, sp);
  if (algorithm != kAlgorithm)
    return fail(Code::kIncompleteSignature,
                "unsupported authorization algorithm '" + shown(algorithm) + "' (only AWS4-HMAC-SHA256)");
  if (sp == std::string_view::npos)
    return fail(Code::kIncompleteSignature, "Authorization header has no Credential, SignedHeaders or Signature");
  std::optional<std::string_view> credential, signed_headers, sig;
  std::string bad;
  split(value.substr(sp + 1), ',', [&](std::string_view piece) {
    if (!bad.empty()) return;
    piece = trim_ows(piece);
    const size_t eq = piece.find('=');
    if (eq == std::string_view::npos) {
      bad = "Authorization header component '" + shown(piece) + "' is not Name=Value";
      return;
    }
    const std::string_view name = piece.substr(0, eq);
    std::optional<std::string_view>* slot = name == "Credential"      ? &credential
                                            : name == "SignedHeaders" ? &signed_headers
                                            : name == "Signature"     ? &sig
                                                                      : nullptr;
    if (slot == nullptr) {
      bad = "unknown Authorization header component '" + shown(name) + "'";
    } else if (slot->has_value()) {
      bad = "Authorization header component " + std::string(name) + " appears more than once";
    } else {
      *slot = piece.substr(eq + 1);
    }
  });
  if (!bad.empty()) return fail(Code::kIncompleteSignature, bad);
  std::string missing;
  if (!credential) missing += "Authorization header requires 'Credential' parameter. ";
  if (!sig) missing += "Authorization header requires 'Signature' parameter. ";
  if (!signed_headers) missing += "Authorization header requires 'SignedHeaders' parameter. ";
  if (!missing.empty()) {
    missing.pop_back();
    return fail(Code::kIncompleteSignature, missing);
  }
  Authorization a;
  AZOTE_TRY(c, parse_credential(*credential));
  a.credential = std::move(c);
  AZOTE_TRY(names, parse_signed_headers(*signed_headers, limits));
  a.signed_headers = std::move(names);
  if (!is_hex64(*sig)) return fail(Code::kIncompleteSignature, "Signature is not 64 hexadecimal digits");
  a.signature = lower(*sig);
  return a;
}

std::optional<std::time_t> parse_amz_date(std::string_view s) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return std::nullopt;
  const int y = digits(s, 0, 4), mo = digits(s, 4, 2), d = digits(s, 6, 2);
  const int h = digits(s, 9, 2), mi = digits(s, 11, 2), sec = digits(s, 13, 2);
  if (y < 0 || mo < 0 || d < 0 || h < 0 || mi < 0 || sec < 0) return std::nullopt;
  return from_fields(y, mo, d, h, mi, sec);
}

std::optional<std::time_t> parse_http_date(std::string_view s) {
  if (auto t = parse_amz_date(s)) return t;
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 §5.6.7), zone also UTC/+0000/-0000.
  static constexpr std::string_view kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() < 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s[19] != ':' ||
      s[22] != ':' || s[25] != ' ')
    return std::nullopt;
  if (std::find(std::begin(kDays), std::end(kDays), s.substr(0, 3)) == std::end(kDays)) return std::nullopt;
  const auto month = std::find(std::begin(kMonths), std::end(kMonths), s.substr(8, 3));
  if (month == std::end(kMonths)) return std::nullopt;
  const std::string_view zone = s.substr(26);
  if (zone != "GMT" && zone != "UTC" && zone != "+0000" && zone != "-0000") return std::nullopt;
  const int d = digits(s, 5, 2), y = digits(s, 12, 4), h = digits(s, 17, 2), mi = digits(s, 20, 2),
            sec = digits(s, 23, 2);
  if (d < 0 || y < 0 || h < 0 || mi < 0 || sec < 0) return std::nullopt;
  return from_fields(y, static_cast<int>(month - std::begin(kMonths)) + 1, d, h, mi, sec);
}

std::string format_amz_date(std::time_t t) {
  struct tm tm {};
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm) != 16) return "";
  return buf;
}

// ---- canonicalization ------------------------------------------------------------------------

std::string uri_encode(std::string_view in, bool keep_slash) {
  std::string out;
  out.reserve(in.size());
  for (char ch : in) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      out += ch;
    } else {
      out += '%';
      out += kHexUpper[c >> 4];
      out += kHexUpper[c & 15];
    }
  }
  return out;
}

std::string normalize_path(std::string_view raw) {
  std::vector<std::string_view> segments;
  split(raw, '/', [&](std::string_view seg) {
    if (seg.empty() || seg == ".") return;
    if (seg == "..") {
      if (!segments.empty()) segments.pop_back();
      return;
    }
    segments.push_back(seg);
  });
  std::string out = "/";
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i > 0) out += '/';
    out += segments[i];
  }
  if (!segments.empty() && !raw.empty() && raw.back() == '/') out += '/';
  return out;
}

std::string canonical_uri(std::string_view raw_path) { return uri_encode(normalize_path(raw_path), true); }

Result<std::string, SigV4Error> canonical_query(std::string_view raw_query, bool presigned, const Limits& limits) {
  AZOTE_TRY(params, parse_query(raw_query, limits));
  return canonical_query_of(params, presigned);
}

std::string trim_all(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  bool pending_space = false;
  for (char c : value) {
    if (is_ws(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out += c;
  }
  return out;
}

Result<std::string, SigV4Error> canonical_request(const Request& req, const std::vector<std::string>& signed_headers,
                                                  std::string_view payload_hash, bool presigned,
                                                  const Limits& limits) {
  AZOTE_TRYV(check_request_line(req, limits));
  AZOTE_TRY(headers, index_headers(req, limits));
  AZOTE_TRY(params, parse_query(req.query, limits));
  return build_canonical_request(req, headers, params, signed_headers, payload_hash, presigned);
}

std::string string_to_sign(std::string_view amz_date, std::string_view scope, std::string_view canonical_request) {
  std::string out(kAlgorithm);
  out += '\n';
  out += amz_date;
  out += '\n';
  out += scope;
  out += '\n';
  out += sha256_hex(canonical_request);
  return out;
}

// ---- crypto --------------------------------------------------------------------------------

SigningKey signing_key(std::string_view secret, std::string_view date, std::string_view region,
                       std::string_view service) {
  std::string k_secret = "AWS4";
  k_secret += secret;
  Wipe<std::string> wipe_secret{k_secret};
  std::array<uint8_t, 32> k_date{}, k_region{}, k_service{};
  Wipe<std::array<uint8_t, 32>> w1{k_date}, w2{k_region}, w3{k_service};
  SigningKey k_signing{};
  hmac_sha256(k_secret.data(), k_secret.size(), date, k_date.data());
  hmac_sha256(k_date.data(), k_date.size(), region, k_region.data());
  hmac_sha256(k_region.data(), k_region.size(), service, k_service.data());
  hmac_sha256(k_service.data(), k_service.size(), kTerminator, k_signing.data());
  return k_signing;
}

std::string signature(const SigningKey& key, std::string_view string_to_sign) {
  std::array<uint8_t, 32> mac{};
  hmac_sha256(key.data(), key.size(), string_to_sign, mac.data());
  return to_hex(mac);
}

std::string sha256_hex(std::string_view data) {
  std::array<uint8_t, 32> md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1 || len != 32) std::abort();
  return to_hex(md);
}

// ---- verification --------------------------------------------------------------------------

Result<Verified, SigV4Error> verify(const Request& req, const SecretLookup& lookup, std::time_t now,
                                    const Options& options) {
  const Limits& limits = options.limits;
  AZOTE_TRYV(check_request_line(req, limits));
  AZOTE_TRY(headers, index_headers(req, limits));
  AZOTE_TRY(params, parse_query(req.query, limits));

  const auto authorizations = values_of(headers, "authorization");
  if (authorizations.size() > 1)
    return fail(Code::kIncompleteSignature, "more than one Authorization header");
  const bool query_auth = std::any_of(params.begin(), params.end(), [](const Param& p) {
    return p.first == "X-Amz-Algorithm" || p.first == "X-Amz-Credential" || p.first == "X-Amz-Signature";
  });
  if (!authorizations.empty() && query_auth)
    return fail(Code::kIncompleteSignature, "both an Authorization header and X-Amz-* query parameters: "
                                            "only one authentication mechanism is allowed");
  if (authorizations.empty() && !query_auth)
    return fail(Code::kMissingAuthenticationToken, "Request is missing Authentication Token");
  if (query_auth && !options.allow_presigned)
    return fail(Code::kAuthFailure, "presigned (query string) authentication is not accepted");

  Claim claim;
  if (query_auth) {
    AZOTE_TRY(c, claim_from_query(params, options));
    claim = std::move(c);
  } else {
    AZOTE_TRY(c, claim_from_header(authorizations[0], headers, limits));
    claim = std::move(c);
  }
  const Credential& cred = claim.credential;

  if (cred.service != options.service)
    return fail(Code::kAuthFailure, "Credential should be scoped to correct service: '" + options.service +
                                        "', not '" + shown(cred.service) + "'");
  if (!options.regions.empty() &&
      std::find(options.regions.begin(), options.regions.end(), cred.region) == options.regions.end())
    return fail(Code::kAuthFailure, "Credential should be scoped to a valid region, not '" + shown(cred.region) + "'");
  AZOTE_TRYV(check_time(claim, now, options));
  const std::string amz_date = format_amz_date(claim.timestamp);
  if (amz_date.compare(0, 8, cred.date) != 0)
    return fail(Code::kAuthFailure, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                                    "from HTTP: '" + cred.date + "' != '" + amz_date.substr(0, 8) + "'");

  // The payload hash: the body's, or what X-Amz-Content-Sha256 says (then checked).
  bool payload_signed = true;
  std::string payload_hash;
  AZOTE_TRY(declared, single_header(headers, "x-amz-content-sha256"));
  if (declared) {
    const std::string value = trim_all(*declared);
    if (value == kUnsignedPayload) {
      if (!claim.presigned || !options.allow_unsigned_payload)
        return fail(Code::kIncompleteSignature, claim.presigned
                                                    ? "UNSIGNED-PAYLOAD is not accepted here"
                                                    : "UNSIGNED-PAYLOAD is accepted for presigned requests only");
      payload_signed = false;
    } else if (!is_hex64(value)) {
      return fail(Code::kIncompleteSignature, "X-Amz-Content-Sha256 '" + shown(value) +
                                                  "' is not a hex SHA-256 (streaming payloads are not supported)");
    } else if (lower(value) != sha256_hex(req.body)) {
      return fail(Code::kAuthFailure, "X-Amz-Content-Sha256 does not match the SHA-256 of the body");
    }
    payload_hash = value;
  } else {
    payload_hash = sha256_hex(req.body);
  }

  std::optional<std::string> secret;
  if (lookup) secret = lookup(cred.access_key_id, claim.session_token);
  if (!secret)
    return fail(Code::kAuthFailure, "AWS was not able to validate the provided access credentials (access key '" +
                                        shown(cred.access_key_id) + "'" +
                                        (claim.session_token.empty() ? "" : " with its session token") + ")");
  Wipe<std::string> wipe_secret{*secret};

  AZOTE_TRY(canonical, build_canonical_request(req, headers, params, claim.signed_headers, payload_hash,
                                               claim.presigned));
  std::array<uint8_t, 32> expected{};
  Wipe<std::array<uint8_t, 32>> wipe_expected{expected};
  {
    SigningKey key = signing_key(*secret, cred.date, cred.region, cred.service);
    Wipe<SigningKey> wipe_key{key};
    hmac_sha256(key.data(), key.size(), string_to_sign(amz_date, cred.scope(), canonical), expected.data());
  }
  const auto provided = from_hex(claim.signature);
  if (!provided || provided->size() != expected.size() ||
      CRYPTO_memcmp(provided->data(), expected.data(), expected.size()) != 0)
    return fail(Code::kAuthFailure,
                "The request signature we calculated does not match the signature you provided (canonical request "
                "SHA-256 " + sha256_hex(canonical) + "). Check your AWS secret access key and signing method.");

  Verified v;
  v.access_key_id = cred.access_key_id;
  v.session_token = std::move(claim.session_token);
  v.region = cred.region;
  v.service = cred.service;
  v.date = cred.date;
  v.timestamp = claim.timestamp;
  v.presigned = claim.presigned;
  v.payload_signed = payload_signed;
  v.signed_headers = std::move(claim.signed_headers);
  return v;
}

// ---- signing -------------------------------------------------------------------------------

Result<void, SigV4Error> sign(Request& req, const Credentials& creds, std::string_view region,
                              std::string_view service, std::time_t now, const SignOptions& options) {
  const Limits limits;
  const Credential cred{creds.access_key_id, format_amz_date(now).substr(0, 8), std::string(region),
                        std::string(service)};
  AZOTE_TRYV(check_credential(cred));
  const std::string amz_date = format_amz_date(now);

  erase_headers(req, {"authorization", "x-amz-date"});
  if (!creds.session_token.empty()) erase_headers(req, {"x-amz-security-token"});
  req.headers.emplace_back("X-Amz-Date", amz_date);
  std::string payload_hash;
  if (options.content_sha256_header) {
    erase_headers(req, {"x-amz-content-sha256"});
    payload_hash = sha256_hex(req.body);
    req.headers.emplace_back("X-Amz-Content-Sha256", payload_hash);
  }
  if (!creds.session_token.empty() && options.sign_session_token)
    req.headers.emplace_back("X-Amz-Security-Token", creds.session_token);

  AZOTE_TRYV(check_request_line(req, limits));
  AZOTE_TRY(headers, index_headers(req, limits));
  AZOTE_TRY(params, parse_query(req.query, limits));
  if (!options.content_sha256_header) {
    AZOTE_TRY(declared, single_header(headers, "x-amz-content-sha256"));
    payload_hash = declared ? trim_all(*declared) : sha256_hex(req.body);
  }
  for (const auto& [name, value] : params)
    if (name == "X-Amz-Algorithm" || name == "X-Amz-Credential" || name == "X-Amz-Signature")
      return fail(Code::kIncompleteSignature, "the query already carries presigned authentication (" + name + ")");
  AZOTE_TRY(names, headers_to_sign(headers, limits));
  AZOTE_TRY(canonical, build_canonical_request(req, headers, params, names, payload_hash, false));
  const std::string sig = sign_string(creds.secret_access_key, cred, amz_date, canonical);
  req.headers.emplace_back("Authorization", std::string(kAlgorithm) + " Credential=" + creds.access_key_id + "/" +
                                                cred.scope() + ", SignedHeaders=" + join_names(names) +
                                                ", Signature=" + sig);
  if (!creds.session_token.empty() && !options.sign_session_token)
    req.headers.emplace_back("X-Amz-Security-Token", creds.session_token);
  // What verify() will count includes the headers added here.
  AZOTE_TRY(final_headers, index_headers(req, limits));
  (void)final_headers;
  return {};
}

Result<void, SigV4Error> presign(Request& req, const Credentials& creds, std::string_view region,
                                 std::string_view service, std::time_t now, std::chrono::seconds expires) {
  const Limits limits;
  const std::string amz_date = format_amz_date(now);
  const Credential cred{creds.access_key_id, amz_date.substr(0, 8), std::string(region), std::string(service)};
  AZOTE_TRYV(check_credential(cred));
  if (expires.count() < 1 || expires.count() > 7 * 24 * 3600)
    return fail(Code::kIncompleteSignature, "expiry must be between 1 second and 7 days");
  AZOTE_TRYV(check_request_line(req, limits));
  AZOTE_TRY(headers, index_headers(req, limits));
  AZOTE_TRY(existing, parse_query(req.query, limits));
  for (const auto& [name, value] : existing)
    if (name.starts_with("X-Amz-"))
      return fail(Code::kIncompleteSignature, "the query already has " + shown(name));
  AZOTE_TRY(names, headers_to_sign(headers, limits));

  std::string q = req.query;
  auto add = [&q](std::string_view name, std::string_view value) {
    if (!q.empty()) q += '&';
    q += name;
    q += '=';
    q += uri_encode(value, false);
  };
  add("X-Amz-Algorithm", kAlgorithm);
  add("X-Amz-Credential", creds.access_key_id + "/" + cred.scope());
  add("X-Amz-Date", amz_date);
  add("X-Amz-Expires", std::to_string(expires.count()));
  add("X-Amz-SignedHeaders", join_names(names));
  if (!creds.session_token.empty()) add("X-Amz-Security-Token", creds.session_token);
  req.query = q;

  AZOTE_TRY(params, parse_query(req.query, limits));
  AZOTE_TRY(canonical, build_canonical_request(req, headers, params, names, sha256_hex(req.body), true));
  add("X-Amz-Signature", sign_string(creds.secret_access_key, cred, amz_date, canonical));
  req.query = q;
  AZOTE_TRY(final_params, parse_query(req.query, limits));  // still within what verify() takes
  (void)final_params;
  return {};
}

}  // namespace azote::sigv4
