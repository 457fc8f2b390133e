// Cross-check against the real client: botocore_requests.py (Debian's /usr/bin/python3 with
// python3-botocore) signs a spread of EC2 requests with botocore's SigV4Auth and
// SigV4QueryAuth and through a botocore EC2 client; every one must verify here, and every
// tampered copy (a body byte, a signed header's value, the date, the secret, a signed header
// dropped) must be refused with the right EC2 error code. SKIPPED without botocore.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "base/hex.hpp"
#include "sigv4/sigv4.hpp"

namespace azote::sigv4 {
namespace {

struct Signed {
  std::string name;
  Request request;
  std::string access_key_id, secret, session_token, region, service;
  std::time_t signed_at = 0;
  bool presigned = false;
  int64_t expires = 0;
};

struct Loaded {
  std::vector<Signed> requests;
  std::string skip;  // why the cross-check cannot run, or ""
  std::string error;
};

Loaded load() {
  Loaded out;
  if (access(AZOTE_SIGV4_PYTHON, X_OK) != 0) {
    out.skip = std::string(AZOTE_SIGV4_PYTHON) + " is not there (Debian's python3 with python3-botocore)";
    return out;
  }
  const std::string cmd = std::string("'") + AZOTE_SIGV4_PYTHON + "' '" + AZOTE_SIGV4_BOTOCORE_SCRIPT + "'";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    out.error = "cannot run " + cmd;
    return out;
  }
  std::string text;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  if (text.starts_with("SKIP: ")) {
    out.skip = text.substr(6);
    return out;
  }
  if (status != 0) {
    out.error = cmd + " failed (status " + std::to_string(status) + ")";
    return out;
  }
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      out.error = "not JSON: " + line;
      return out;
    }
    Signed s;
    s.name = j.at("name");
    s.request.method = j.at("method");
    s.request.path = j.at("path");
    s.request.query = j.at("query");
    for (const auto& h : j.at("headers")) s.request.headers.emplace_back(h.at(0), h.at(1));
    const auto body = from_hex(j.at("body_hex").get<std::string>());
    if (!body) {
      out.error = "bad body_hex in " + s.name;
      return out;
    }
    s.request.body.assign(body->begin(), body->end());
    s.access_key_id = j.at("access_key_id");
    s.secret = j.at("secret_access_key");
    s.session_token = j.at("session_token");
    s.region = j.at("region");
    s.service = j.at("service");
    s.signed_at = j.at("signed_at").get<std::time_t>();
    s.presigned = j.at("presigned");
    if (!j.at("expires").is_null()) s.expires = j.at("expires");
    out.requests.push_back(std::move(s));
  }
  return out;
}

class Botocore : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { loaded_ = new Loaded(load()); }
  static void TearDownTestSuite() {
    delete loaded_;
    loaded_ = nullptr;
  }
  void SetUp() override {
    if (!loaded_->skip.empty()) GTEST_SKIP() << "SKIPPED: " << loaded_->skip;
    ASSERT_TRUE(loaded_->error.empty()) << loaded_->error;
    ASSERT_GE(loaded_->requests.size(), 14u);
  }
  static const std::vector<Signed>& requests() { return loaded_->requests; }

  static Options options_for(const Signed& s) {
    Options o;  // service "ec2", 15 minutes, presigned accepted
    o.regions = {"us-east-1", "eu-west-3"};
    EXPECT_EQ(s.service, o.service);
    return o;
  }
  static SecretLookup lookup_for(const Signed& s, std::string secret = "") {
    if (secret.empty()) secret = s.secret;
    return [akid = s.access_key_id, token = s.session_token, secret](std::string_view a,
                                                                     std::string_view t) -> std::optional<std::string> {
      if (a == akid && t == token) return secret;
      return std::nullopt;
    };
  }
  static Result<Verified, SigV4Error> check(const Signed& s, const Request& r, std::time_t now,
                                            const std::string& secret = "") {
    return verify(r, lookup_for(s, secret), now, options_for(s));
  }
  static std::string describe(const Result<Verified, SigV4Error>& r) {
    return r.ok() ? "accepted" : std::string(code_name(r.error().code)) + ": " + r.error().message();
  }
  static void expect_refused(const Signed& s, const Request& r, std::time_t now, Code code, const char* what,
                             const std::string& secret = "") {
    auto v = check(s, r, now, secret);
    EXPECT_FALSE(v.ok()) << s.name << ", " << what << ": accepted";
    if (!v.ok()) {
      EXPECT_EQ(v.error().code, code) << s.name << ", " << what << ": " << describe(v);
    }
    ++tampered_;
  }
  static std::vector<std::string> signed_headers_of(const Signed& s) {
    auto v = check(s, s.request, s.signed_at);
    return v.ok() ? v->signed_headers : std::vector<std::string>{};
  }
  static void remove_header(Request& r, std::string_view lname) {
    std::erase_if(r.headers, [&](const auto& h) {
      std::string l = h.first;
      for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return l == lname;
    });
  }

  static Loaded* loaded_;
  static int tampered_;
};
Loaded* Botocore::loaded_ = nullptr;
int Botocore::tampered_ = 0;

TEST_F(Botocore, EveryRequestVerifies) {
  int presigned = 0;
  for (const Signed& s : requests()) {
    for (std::time_t now : {s.signed_at, s.signed_at + 5}) {
      auto v = check(s, s.request, now);
      ASSERT_TRUE(v.ok()) << s.name << ": " << describe(v);
      EXPECT_EQ(v->access_key_id, s.access_key_id) << s.name;
      EXPECT_EQ(v->session_token, s.session_token) << s.name;
      EXPECT_EQ(v->region, s.region) << s.name;
      EXPECT_EQ(v->service, "ec2") << s.name;
      EXPECT_EQ(v->presigned, s.presigned) << s.name;
      EXPECT_TRUE(v->payload_signed) << s.name;
      EXPECT_LE(std::abs(v->timestamp - s.signed_at), 1) << s.name;
    }
    presigned += s.presigned;
  }
  EXPECT_EQ(presigned, 3);
  std::printf("[ botocore ] %zu requests signed by botocore %s verified\n", requests().size(),
              "(SigV4Auth, SigV4QueryAuth, EC2 client)");
}

TEST_F(Botocore, OneByteOfTheBodyOrQuery) {
  for (const Signed& s : requests()) {
    Request r = s.request;
    if (!r.body.empty()) {
      r.body[r.body.size() / 2] ^= 0x01;
    } else {
      r.query += "&Tampered=1";
    }
    expect_refused(s, r, s.signed_at, Code::kAuthFailure, "body/query byte");
    if (!s.request.query.empty()) {  // one character of the first parameter's value
      Request q = s.request;
      const size_t eq = q.query.find('=');
      ASSERT_NE(eq, std::string::npos);
      q.query = q.query.substr(0, eq + 1) + "Z" + q.query.substr(eq + 1);
      expect_refused(s, q, s.signed_at, Code::kAuthFailure, "query value");
    }
  }
}

TEST_F(Botocore, ASignedHeaderValue) {
  for (const Signed& s : requests()) {
    const auto names = signed_headers_of(s);
    ASSERT_FALSE(names.empty()) << s.name;
    for (const std::string& name : names) {
      Request r = s.request;
      for (auto& [n, v] : r.headers) {
        std::string l = n;
        for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (l != name) continue;
        // The date by one second (still within the window), the body's hash by one digit,
        // anything else by one character.
        if (name == "x-amz-content-sha256") {
          v.back() = v.back() == '0' ? '1' : '0';
        } else if (name == "x-amz-date") {
          v = format_amz_date(*parse_amz_date(v) + 1);
        } else if (name == "date") {
          v = format_amz_date(*parse_http_date(v) + 1);
        } else {
          v += "x";
        }
        break;
      }
      expect_refused(s, r, s.signed_at, Code::kAuthFailure, name.c_str());
    }
  }
}

TEST_F(Botocore, DateOutsideTheWindow) {
  for (const Signed& s : requests()) {
    const std::time_t late = s.presigned ? s.signed_at + s.expires + 1 : s.signed_at + 16 * 60;
    expect_refused(s, s.request, late, Code::kRequestExpired, "late");
    expect_refused(s, s.request, s.signed_at - 16 * 60, Code::kRequestExpired, "early");
    if (!s.presigned) {  // the header moved 16 minutes back: expired before anything else
      Request r = s.request;
      for (auto& [n, v] : r.headers) {
        if (n == "X-Amz-Date") v = format_amz_date(*parse_amz_date(v) - 16 * 60);
        if (n == "Date") v = format_amz_date(*parse_http_date(v) - 16 * 60);
      }
      expect_refused(s, r, s.signed_at, Code::kRequestExpired, "X-Amz-Date moved");
    }
  }
}

TEST_F(Botocore, WrongSecretUnknownKeyWrongRegion) {
  for (const Signed& s : requests()) {
    expect_refused(s, s.request, s.signed_at, Code::kAuthFailure, "wrong secret", s.secret + "x");
    auto unknown = verify(s.request, [](std::string_view, std::string_view) { return std::optional<std::string>(); },
                          s.signed_at, options_for(s));
    EXPECT_EQ(unknown.ok() ? Code{} : unknown.error().code, Code::kAuthFailure) << s.name;
    Options o = options_for(s);
    o.regions = {"ap-south-2"};
    auto region = verify(s.request, lookup_for(s), s.signed_at, o);
    EXPECT_EQ(region.ok() ? Code{} : region.error().code, Code::kAuthFailure) << s.name;
    tampered_ += 2;
  }
}

TEST_F(Botocore, ADroppedSignedHeader) {
  for (const Signed& s : requests()) {
    for (const std::string& name : signed_headers_of(s)) {
      Request r = s.request;
      remove_header(r, name);
      const bool dating = !s.presigned && (name == "x-amz-date" || name == "date");
      expect_refused(s, r, s.signed_at, dating ? Code::kIncompleteSignature : Code::kAuthFailure, name.c_str());
    }
  }
}

TEST_F(Botocore, NoAuthenticationLeft) {
  for (const Signed& s : requests()) {
    Request r = s.request;
    remove_header(r, "authorization");
    if (s.presigned) r.query = r.query.substr(0, r.query.find("&X-Amz-Algorithm="));
    expect_refused(s, r, s.signed_at, Code::kMissingAuthenticationToken, "no auth");
  }
  std::printf("[ botocore ] %d tampered copies refused\n", tampered_);
}

}  // namespace
}  // namespace azote::sigv4
