// lib/sigv4 against AWS's published Signature Version 4 test suite (aws_test_suite.inc: the
// canonical requests, strings to sign and signatures AWS expects, for header and presigned
// authentication), then every rule and refusal of verify() one by one.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sigv4/raw_request.hpp"
#include "sigv4/sigv4.hpp"

namespace azote::sigv4 {
namespace {

struct SuiteCase {
  const char* name;
  const char* token;
  bool omit_session_token;
  bool sign_body;
  const char* request;
  const char* header_canonical;
  const char* header_sts;
  const char* header_signed;
  const char* query_canonical;
  const char* query_sts;
  const char* query_signed;
};

constexpr SuiteCase kSuite[] = {
#include "aws_test_suite.inc"
};

constexpr const char* kAkid = "AKIDEXAMPLE";
constexpr const char* kSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const std::time_t kSuiteTime = *parse_amz_date("20150830T123600Z");

Options suite_options() {
  Options o;
  o.service = "service";
  o.regions = {"us-east-1"};
  return o;
}

SecretLookup suite_lookup() {
  return [](std::string_view akid, std::string_view) -> std::optional<std::string> {
    if (akid == kAkid) return std::string(kSecret);
    return std::nullopt;
  };
}

constexpr const char* kScope = "20150830/us-east-1/service/aws4_request";
constexpr const char* kPresignedPrefix =
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request"
    "&X-Amz-Date=20150830T123600Z";

// The suite key's signature of a canonical request made at the suite's time.
std::string suite_signature(std::string_view canonical) {
  return signature(signing_key(kSecret, "20150830", "us-east-1", "service"),
                   string_to_sign("20150830T123600Z", kScope, canonical));
}

Request parse(const char* text) {
  auto r = parse_raw_request(text);
  EXPECT_TRUE(r.has_value()) << text;
  return r ? *r : Request{};
}

std::string header(const Request& req, std::string_view lname) {
  for (const auto& [n, v] : req.headers) {
    std::string l = n;
    for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (l == lname) return trim_all(v);
  }
  return "";
}

void remove_header(Request& req, std::string_view lname) {
  std::erase_if(req.headers, [&](const auto& h) {
    std::string l = h.first;
    for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return l == lname;
  });
}

void set_header(Request& req, std::string_view lname, std::string value) {
  remove_header(req, lname);
  req.headers.emplace_back(std::string(lname), std::move(value));
}

// The decoded value of one query parameter.
std::string query_param(const Request& req, std::string_view name) {
  std::string q = "&" + req.query;
  const std::string key = "&" + std::string(name) + "=";
  const size_t at = q.find(key);
  if (at == std::string::npos) return "";
  std::string raw = q.substr(at + key.size());
  raw = raw.substr(0, raw.find('&'));
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '%' && i + 2 < raw.size()) {
      out += static_cast<char>(std::stoi(raw.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += raw[i];
    }
  }
  return out;
}

Code code_of(const Result<Verified, SigV4Error>& r) { return r.ok() ? Code{} : r.error().code; }

std::string describe(const Result<Verified, SigV4Error>& r) {
  return r.ok() ? "ok" : std::string(code_name(r.error().code)) + ": " + r.error().message();
}

// ---- AWS's test suite ------------------------------------------------------------------------

TEST(Suite, HeaderCanonicalRequestStringToSignAndSignature) {
  for (const SuiteCase& c : kSuite) {
    SCOPED_TRACE(c.name);
    const Request req = parse(c.header_signed);
    auto auth = parse_authorization(header(req, "authorization"));
    ASSERT_TRUE(auth.ok()) << auth.error().message();
    const std::string declared = header(req, "x-amz-content-sha256");
    EXPECT_EQ(!declared.empty(), c.sign_body);
    const std::string payload = declared.empty() ? sha256_hex(req.body) : declared;
    auto creq = canonical_request(req, auth->signed_headers, payload);
    ASSERT_TRUE(creq.ok()) << creq.error().message();
    EXPECT_EQ(*creq, c.header_canonical);
    const std::string sts = string_to_sign(header(req, "x-amz-date"), auth->credential.scope(), *creq);
    EXPECT_EQ(sts, c.header_sts);
    EXPECT_EQ(signature(signing_key(kSecret, "20150830", "us-east-1", "service"), sts), auth->signature);
  }
}

TEST(Suite, HeaderSignedRequestsVerify) {
  for (const SuiteCase& c : kSuite) {
    SCOPED_TRACE(c.name);
    const Request req = parse(c.header_signed);
    auto v = verify(req, suite_lookup(), kSuiteTime, suite_options());
    ASSERT_TRUE(v.ok()) << describe(v);
    EXPECT_EQ(v->access_key_id, kAkid);
    EXPECT_EQ(v->region, "us-east-1");
    EXPECT_EQ(v->service, "service");
    EXPECT_EQ(v->date, "20150830");
    EXPECT_EQ(v->timestamp, kSuiteTime);
    EXPECT_FALSE(v->presigned);
    EXPECT_TRUE(v->payload_signed);
    EXPECT_EQ(v->session_token, c.token);  // sent in both token cases (signed or not)
  }
}

TEST(Suite, PresignedCanonicalRequestStringToSignAndSignature) {
  for (const SuiteCase& c : kSuite) {
    SCOPED_TRACE(c.name);
    const Request req = parse(c.query_signed);
    auto names = parse_signed_headers(query_param(req, "X-Amz-SignedHeaders"));
    ASSERT_TRUE(names.ok()) << names.error().message();
    auto creq = canonical_request(req, *names, sha256_hex(req.body), /*presigned=*/true);
    ASSERT_TRUE(creq.ok()) << creq.error().message();
    if (c.omit_session_token) {
      // aws-c-auth appended the token after signing; every query parameter but the
      // signature is signed here (as AWS's rules say), so the token shows up.
      EXPECT_NE(*creq, c.query_canonical);
      continue;
    }
    EXPECT_EQ(*creq, c.query_canonical);
    const std::string sts = string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", *creq);
    EXPECT_EQ(sts, c.query_sts);
    EXPECT_EQ(signature(signing_key(kSecret, "20150830", "us-east-1", "service"), sts),
              query_param(req, "X-Amz-Signature"));
  }
}

TEST(Suite, PresignedRequestsVerify) {
  for (const SuiteCase& c : kSuite) {
    SCOPED_TRACE(c.name);
    const Request req = parse(c.query_signed);
    auto v = verify(req, suite_lookup(), kSuiteTime + 3600, suite_options());
    if (c.omit_session_token) {  // the token was not signed: refused
      EXPECT_EQ(code_of(v), Code::kAuthFailure) << describe(v);
      continue;
    }
    ASSERT_TRUE(v.ok()) << describe(v);
    EXPECT_TRUE(v->presigned);
    EXPECT_EQ(v->session_token, c.token);
    EXPECT_EQ(v->signed_headers, *parse_signed_headers(query_param(req, "X-Amz-SignedHeaders")));
    // One second past X-Amz-Expires=3600: expired.
    EXPECT_EQ(code_of(verify(req, suite_lookup(), kSuiteTime + 3601, suite_options())), Code::kRequestExpired);
  }
}

TEST(Suite, SignerReproducesTheAuthorizationHeaders) {
  for (const SuiteCase& c : kSuite) {
    SCOPED_TRACE(c.name);
    Request req = parse(c.request);
    SignOptions so;
    so.content_sha256_header = c.sign_body;
    so.sign_session_token = !c.omit_session_token;
    ASSERT_TRUE(sign(req, Credentials{kAkid, kSecret, c.token}, "us-east-1", "service", kSuiteTime, so).ok());
    EXPECT_EQ(header(req, "authorization"), header(parse(c.header_signed), "authorization"));
    EXPECT_TRUE(verify(req, suite_lookup(), kSuiteTime, suite_options()).ok());
  }
}

TEST(Suite, PresignerReproducesTheSignatures) {
  for (const SuiteCase& c : kSuite) {
    if (c.omit_session_token) continue;  // our presigner always signs the token
    SCOPED_TRACE(c.name);
    Request req = parse(c.request);
    ASSERT_TRUE(presign(req, Credentials{kAkid, kSecret, c.token}, "us-east-1", "service", kSuiteTime,
                        std::chrono::seconds(3600))
                    .ok());
    EXPECT_EQ(query_param(req, "X-Amz-Signature"), query_param(parse(c.query_signed), "X-Amz-Signature"));
    EXPECT_TRUE(verify(req, suite_lookup(), kSuiteTime, suite_options()).ok());
  }
}

// ---- the pieces ----------------------------------------------------------------------------

TEST(Pieces, UriEncode) {
  EXPECT_EQ(uri_encode("AZaz09-._~", false), "AZaz09-._~");
  EXPECT_EQ(uri_encode("a b+c/d", false), "a%20b%2Bc%2Fd");
  EXPECT_EQ(uri_encode("a b+c/d", true), "a%20b%2Bc/d");
  EXPECT_EQ(uri_encode("%41*!'()", false), "%2541%2A%21%27%28%29");
  EXPECT_EQ(uri_encode("\xe1\x88\xb4", false), "%E1%88%B4");
  EXPECT_EQ(uri_encode(std::string("\0", 1), false), "%00");
}

TEST(Pieces, PathNormalizationAndDoubleEncoding) {
  struct {
    const char* raw;
    const char* canonical;
  } cases[] = {
      {"", "/"},
      {"/", "/"},
      {"//", "/"},
      {"/./", "/"},
      {"/example/..", "/"},
      {"/example1/example2/../..", "/"},
      {"/../../a", "/a"},
      {"/./example", "/example"},
      {"//example//", "/example/"},
      {"/a/b/../c/./d/", "/a/c/d/"},
      {"/example space/", "/example%20space/"},
      {"/example%20space/", "/example%2520space/"},  // as received, encoded once more
      {"/a%2Fb", "/a%252Fb"},                        // an encoded '/' is not a separator
      {"/%2E%2E/x", "/%252E%252E/x"},                // nor an encoded dot segment
      {"/$delete", "/%24delete"},
  };
  for (const auto& c : cases) EXPECT_EQ(canonical_uri(c.raw), c.canonical) << c.raw;
}

TEST(Pieces, CanonicalQuery) {
  auto q = [](std::string_view raw, bool presigned = false) {
    auto r = canonical_query(raw, presigned);
    return r.ok() ? *r : "ERROR " + r.error().message();
  };
  EXPECT_EQ(q(""), "");
  EXPECT_EQ(q("b=2&a=1"), "a=1&b=2");
  EXPECT_EQ(q("a=2&a=1&a=10"), "a=1&a=10&a=2");         // then by value
  EXPECT_EQ(q("Param-3=x&Param=y"), "Param=y&Param-3=x");  // by name, not by "name=value"
  EXPECT_EQ(q("a=b+c&d=e%20f"), "a=b%20c&d=e%20f");      // '+' is a space
  EXPECT_EQ(q("a=%2b&b=%7e&c=*"), "a=%2B&b=~&c=%2A");    // decoded, then re-encoded
  EXPECT_EQ(q("acl"), "acl=");
  EXPECT_EQ(q("a=&b"), "a=&b=");
  EXPECT_EQ(q("a=1&&b=2&"), "a=1&b=2");
  EXPECT_EQ(q("a=x=y"), "a=x%3Dy");
  EXPECT_EQ(q("X-Amz-Signature=abc&a=1"), "X-Amz-Signature=abc&a=1");
  EXPECT_EQ(q("X-Amz-Signature=abc&a=1", true), "a=1");
  for (const char* bad : {"a=%", "a=%4", "a=%zz", "%g0=1"}) {
    auto r = canonical_query(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, Code::kMalformedQueryString);
  }
}

TEST(Pieces, TrimAll) {
  EXPECT_EQ(trim_all("  a   b  "), "a b");
  EXPECT_EQ(trim_all("\"a   b   c\""), "\"a b c\"");  // as the suite's get-header-value-trim
  EXPECT_EQ(trim_all("value1\n  value2\n     value3"), "value1 value2 value3");
  EXPECT_EQ(trim_all("\t"), "");
  EXPECT_EQ(trim_all("x"), "x");
}

TEST(Pieces, Dates) {
  EXPECT_EQ(format_amz_date(kSuiteTime), "20150830T123600Z");
  EXPECT_EQ(kSuiteTime, 1440938160);
  EXPECT_EQ(parse_amz_date("20160229T000000Z"), 1456704000);
  for (const char* bad : {"", "20150830T123600", "20150830 123600Z", "2015-08-30T12:36:00Z", "20150229T000000Z",
                          "20151301T000000Z", "20150832T000000Z", "20150830T243600Z", "20150830T126000Z",
                          "20150830T123660Z", "19691231T235959Z", "2015083OT123600Z", "20150830T123600Z "})
    EXPECT_FALSE(parse_amz_date(bad).has_value()) << bad;
  for (const char* good : {"Sun, 30 Aug 2015 12:36:00 GMT", "Sun, 30 Aug 2015 12:36:00 -0000",
                           "Sun, 30 Aug 2015 12:36:00 +0000", "Sun, 30 Aug 2015 12:36:00 UTC", "20150830T123600Z"})
    EXPECT_EQ(parse_http_date(good), kSuiteTime) << good;
  for (const char* bad : {"Sun, 30 Aug 2015 12:36:00 CET", "Sun, 30 Aug 2015 12:36:00 +0100",
                          "Sun 30 Aug 2015 12:36:00 GMT", "Xyz, 30 Aug 2015 12:36:00 GMT",
                          "Sun, 30 Foo 2015 12:36:00 GMT", "Sun, 31 Sep 2015 12:36:00 GMT",
                          "Sunday, 30-Aug-15 12:36:00 GMT"})
    EXPECT_FALSE(parse_http_date(bad).has_value()) << bad;
}

TEST(Pieces, SigningKeyOfAwsDocumentation) {
  // The example signing key of AWS's documentation for the suite's secret, 20150830,
  // us-east-1, iam (AWS General Reference, "Task 3: Calculate the Signature for AWS
  // Signature Version 4", docs.aws.amazon.com/general/latest/gr/sigv4-calculate-signature.html);
  // also checked with Python's hmac module.
  const SigningKey k = signing_key(kSecret, "20150830", "us-east-1", "iam");
  std::string hex;
  for (uint8_t b : k) {
    static constexpr char d[] = "0123456789abcdef";
    hex += d[b >> 4];
    hex += d[b & 15];
  }
  EXPECT_EQ(hex, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
}

TEST(Pieces, CodeNamesAndStatuses) {
  EXPECT_STREQ(code_name(Code::kMissingAuthenticationToken), "MissingAuthenticationToken");
  EXPECT_STREQ(code_name(Code::kIncompleteSignature), "IncompleteSignature");
  EXPECT_STREQ(code_name(Code::kAuthFailure), "AuthFailure");
  EXPECT_STREQ(code_name(Code::kRequestExpired), "RequestExpired");
  EXPECT_STREQ(code_name(Code::kMalformedQueryString), "MalformedQueryString");
  EXPECT_EQ(http_status(Code::kAuthFailure), 401);
  EXPECT_EQ(http_status(Code::kMissingAuthenticationToken), 401);
  EXPECT_EQ(http_status(Code::kIncompleteSignature), 400);
  EXPECT_EQ(http_status(Code::kRequestExpired), 400);
}

// ---- the Authorization header -----------------------------------------------------------

constexpr const char* kGoodAuth =
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

TEST(Authorization, ParsesTheThreeComponentsInAnyOrderAndSpacing) {
  auto a = parse_authorization(kGoodAuth);
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->credential.access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(a->credential.scope(), "20150830/us-east-1/service/aws4_request");
  EXPECT_EQ(a->signed_headers, (std::vector<std::string>{"host", "x-amz-date"}));
  auto b = parse_authorization(
      "AWS4-HMAC-SHA256  Signature=5FA00FA31553B73EBF1942676E86291E8372FF2A2260956D9B8AAE1D763FBF31,"
      "SignedHeaders=host;x-amz-date,Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request ");
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->signature, a->signature);  // upper-case hex taken, kept lower-case
}

TEST(Authorization, MalformedHeadersAreIncompleteSignature) {
  const std::string cred = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
  const std::string sh = "SignedHeaders=host;x-amz-date";
  const std::string sig = "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
  const std::string alg = "AWS4-HMAC-SHA256 ";
  const std::vector<std::string> bad = {
      "",
      "AWS4-HMAC-SHA256",
      "AWS4-HMAC-SHA256 ",
      "AWS4-HMAC-SHA1 " + cred + ", " + sh + ", " + sig,
      "AWS AKIDEXAMPLE:signature",
      "AWS4-ECDSA-P256-SHA256 " + cred + ", " + sh + ", " + sig,
      alg + sh + ", " + sig,                                    // no Credential
      alg + cred + ", " + sig,                                  // no SignedHeaders
      alg + cred + ", " + sh,                                   // no Signature
      alg + cred + ", " + cred + ", " + sh + ", " + sig,        // twice
      alg + cred + ", " + sh + ", " + sig + ", Foo=bar",        // unknown
      alg + cred + ", " + sh + ", " + sig + ",",                // empty component
      alg + cred + " " + sh + " " + sig,                        // no commas
      alg + "Credential=AKIDEXAMPLE/20150830/us-east-1/service, " + sh + ", " + sig,
      alg + "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request/x, " + sh + ", " + sig,
      alg + "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws5_request, " + sh + ", " + sig,
      alg + "Credential=/20150830/us-east-1/service/aws4_request, " + sh + ", " + sig,
      alg + "Credential=AKID+EXAMPLE/20150830/us-east-1/service/aws4_request, " + sh + ", " + sig,
      alg + "Credential=AKIDEXAMPLE/2015083/us-east-1/service/aws4_request, " + sh + ", " + sig,
      alg + "Credential=AKIDEXAMPLE/20150830//service/aws4_request, " + sh + ", " + sig,
      alg + "Credential=AKIDEXAMPLE/20150830/US-EAST-1/service/aws4_request, " + sh + ", " + sig,
      alg + cred + ", SignedHeaders=x-amz-date;host, " + sig,   // not sorted
      alg + cred + ", SignedHeaders=host;host, " + sig,         // not unique
      alg + cred + ", SignedHeaders=Host;x-amz-date, " + sig,   // not lower-case
      alg + cred + ", SignedHeaders=host;;x-amz-date, " + sig,  // empty name
      alg + cred + ", SignedHeaders=, " + sig,
      alg + cred + ", SignedHeaders=host;my header, " + sig,
      alg + cred + ", " + sh + ", Signature=5fa00fa3",
      alg + cred + ", " + sh + ", Signature=zfa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
  };
  for (const auto& v : bad) {
    auto r = parse_authorization(v);
    ASSERT_FALSE(r.ok()) << v;
    EXPECT_EQ(r.error().code, Code::kIncompleteSignature) << v;
    EXPECT_FALSE(r.error().message().empty());
  }
}

TEST(Authorization, SignedHeadersAreBounded) {
  std::string many;
  for (int i = 0; i < 65; ++i) many += (i ? ";h" : "h") + std::to_string(100 + i);
  auto r = parse_signed_headers(many);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kIncompleteSignature);
  Limits l;
  l.max_signed_headers = 65;
  EXPECT_TRUE(parse_signed_headers(many, l).ok());
}

// ---- verify(): header authentication ---------------------------------------------------

Request suite_request(const char* name, bool presigned = false) {
  for (const SuiteCase& c : kSuite)
    if (std::string_view(c.name) == name) return parse(presigned ? c.query_signed : c.header_signed);
  ADD_FAILURE() << "no suite case " << name;
  return {};
}

Result<Verified, SigV4Error> check(const Request& req, std::time_t now = kSuiteTime,
                                   const Options& options = suite_options()) {
  return verify(req, suite_lookup(), now, options);
}

TEST(Verify, NoAuthenticationAtAll) {
  Request req = suite_request("get-vanilla");
  remove_header(req, "authorization");
  auto r = check(req);
  EXPECT_EQ(code_of(r), Code::kMissingAuthenticationToken) << describe(r);
  EXPECT_EQ(r.error().message(), "Request is missing Authentication Token");
}

TEST(Verify, ClockSkewOfFifteenMinutesEitherWay) {
  const Request req = suite_request("get-vanilla");
  EXPECT_TRUE(check(req, kSuiteTime + 900).ok());
  EXPECT_TRUE(check(req, kSuiteTime - 900).ok());
  auto late = check(req, kSuiteTime + 901);
  EXPECT_EQ(code_of(late), Code::kRequestExpired);
  EXPECT_EQ(late.error().message(),
            "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z (20150830T125101Z - 15 min.)");
  auto early = check(req, kSuiteTime - 901);
  EXPECT_EQ(code_of(early), Code::kRequestExpired);
  EXPECT_NE(early.error().message().find("not yet current"), std::string::npos);
  Options o = suite_options();
  o.max_skew = std::chrono::seconds(60);
  EXPECT_EQ(code_of(check(req, kSuiteTime + 61, o)), Code::kRequestExpired);
}

TEST(Verify, WrongSecretUnknownKeyAndTokenAreAuthFailure) {
  const Request req = suite_request("get-vanilla");
  auto wrong = verify(req, [](std::string_view, std::string_view) { return std::optional<std::string>("wrong"); },
                      kSuiteTime, suite_options());
  EXPECT_EQ(code_of(wrong), Code::kAuthFailure);
  // The message names what failed and never the secret or the expected signature.
  const std::string msg = wrong.error().message();
  EXPECT_NE(msg.find("does not match the signature you provided"), std::string::npos);
  auto expected = signature(signing_key("wrong", "20150830", "us-east-1", "service"),
                            string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request",
                                           *canonical_request(req, {"host", "x-amz-date"}, sha256_hex(""))));
  EXPECT_EQ(msg.find(expected), std::string::npos);
  EXPECT_EQ(msg.find("wrong"), std::string::npos);
  EXPECT_EQ(msg.find(kSecret), std::string::npos);

  auto unknown = verify(req, [](std::string_view, std::string_view) { return std::optional<std::string>(); },
                        kSuiteTime, suite_options());
  EXPECT_EQ(code_of(unknown), Code::kAuthFailure);
  EXPECT_NE(unknown.error().message().find("AKIDEXAMPLE"), std::string::npos);

  // The lookup sees the session token and may refuse it.
  const Request with_token = suite_request("post-sts-header-before");
  std::string seen;
  auto token_check = [&seen](std::string_view akid, std::string_view token) -> std::optional<std::string> {
    seen = token;
    if (akid == kAkid && token.starts_with("AQoDYXdz")) return std::string(kSecret);
    return std::nullopt;
  };
  EXPECT_TRUE(verify(with_token, token_check, kSuiteTime, suite_options()).ok());
  EXPECT_TRUE(seen.starts_with("AQoDYXdzEPT//"));
  Request other_token = with_token;
  set_header(other_token, "x-amz-security-token", "forged");
  EXPECT_EQ(code_of(verify(other_token, token_check, kSuiteTime, suite_options())), Code::kAuthFailure);
}

TEST(Verify, TamperedRequestsAreAuthFailure) {
  const Request good = suite_request("post-x-www-form-urlencoded");
  ASSERT_TRUE(check(good).ok());
  {
    Request r = good;
    r.body[3] ^= 1;
    auto v = check(r);  // the signed X-Amz-Content-Sha256 no longer matches
    EXPECT_EQ(code_of(v), Code::kAuthFailure);
    EXPECT_NE(v.error().message().find("X-Amz-Content-Sha256"), std::string::npos);
  }
  {
    Request r = suite_request("post-x-www-form-urlencoded-parameters");
    remove_header(r, "x-amz-content-sha256");  // unsigned body hash taken from the body...
    auto v = check(r);                          // ...whose header was signed: dropped signed header
    EXPECT_EQ(code_of(v), Code::kAuthFailure) << describe(v);
  }
  {
    Request r = suite_request("post-vanilla");
    r.body = "Action=TerminateInstances";
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
  {
    Request r = good;
    set_header(r, "content-type", "application/x-www-form-urlencoded; charset=utf-8");
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
  {
    Request r = good;
    r.query = "Action=TerminateInstances";
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
  {
    Request r = good;
    r.path = "/other";
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
  {
    Request r = good;
    r.method = "PUT";
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
  {
    Request r = good;
    set_header(r, "x-amz-date", "20150830T123601Z");
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
  {
    Request r = good;
    std::string a = header(r, "authorization");
    a[a.size() - 1] = a.back() == '0' ? '1' : '0';
    set_header(r, "authorization", a);
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
  {
    Request r = good;  // a header added but not signed: fine
    r.headers.emplace_back("User-Agent", "aws-cli/2.15");
    EXPECT_TRUE(check(r).ok());
  }
  {
    Request r = suite_request("get-header-key-duplicate");  // repeated header: order matters
    std::swap(r.headers[1], r.headers[3]);
    EXPECT_EQ(code_of(check(r)), Code::kAuthFailure);
  }
}

TEST(Verify, DroppedSignedHeaders) {
  const Request good = suite_request("post-x-www-form-urlencoded");
  for (const std::string name : {"content-length", "content-type", "host", "x-amz-content-sha256"}) {
    Request r = good;
    remove_header(r, name);
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kAuthFailure) << name << ": " << describe(v);
  }
  Request r = good;
  remove_header(r, "x-amz-date");
  auto v = check(r);
  EXPECT_EQ(code_of(v), Code::kIncompleteSignature) << describe(v);
  EXPECT_NE(v.error().message().find("'X-Amz-Date' or a 'Date' header"), std::string::npos);
}

TEST(Verify, ScopeServiceRegionAndDate) {
  const Request req = suite_request("get-vanilla");
  Options o = suite_options();
  o.service = "ec2";
  auto v = check(req, kSuiteTime, o);
  EXPECT_EQ(code_of(v), Code::kAuthFailure);
  EXPECT_NE(v.error().message().find("correct service"), std::string::npos);
  o = suite_options();
  o.regions = {"eu-west-1", "eu-west-3"};
  v = check(req, kSuiteTime, o);
  EXPECT_EQ(code_of(v), Code::kAuthFailure);
  EXPECT_NE(v.error().message().find("valid region"), std::string::npos);
  o.regions = {"eu-west-1", "us-east-1"};
  EXPECT_TRUE(check(req, kSuiteTime, o).ok());
  o.regions.clear();  // any region
  EXPECT_TRUE(check(req, kSuiteTime, o).ok());

  // Credential date of another day than X-Amz-Date (within the skew, across midnight).
  Request r;
  r.method = "GET";
  r.path = "/";
  r.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T235959Z"}};
  const std::time_t before_midnight = *parse_amz_date("20150830T235959Z");
  ASSERT_TRUE(sign(r, Credentials{kAkid, kSecret, ""}, "us-east-1", "service", before_midnight).ok());
  std::string a = header(r, "authorization");
  a.replace(a.find("20150830"), 8, "20150831");
  set_header(r, "authorization", a);
  v = check(r, *parse_amz_date("20150831T000100Z"));
  EXPECT_EQ(code_of(v), Code::kAuthFailure);
  EXPECT_NE(v.error().message().find("Date in Credential scope does not match"), std::string::npos);
}

TEST(Verify, RequiredSignedHeaders) {
  // host and the dating header must be signed, however valid the signature over the rest.
  for (const auto& [headers, needle] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"x-amz-date"}, "'host'"}, {{"host"}, "'x-amz-date'"}}) {
    Request r = suite_request("get-vanilla");
    remove_header(r, "authorization");
    auto creq = canonical_request(r, headers, sha256_hex(""));
    ASSERT_TRUE(creq.ok());
    const std::string sig = suite_signature(*creq);
    std::string names = headers[0];
    r.headers.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                                            "aws4_request, SignedHeaders=" + names + ", Signature=" + sig);
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kIncompleteSignature) << describe(v);
    EXPECT_NE(v.error().message().find(needle), std::string::npos) << v.error().message();
  }
}

TEST(Verify, DateHeaderInsteadOfXAmzDate) {
  Request r;
  r.method = "POST";
  r.path = "/";
  r.body = "Action=DescribeRegions&Version=2016-11-15";
  r.headers = {{"Host", "ec2.us-east-1.amazonaws.com"}, {"Date", "Sun, 30 Aug 2015 12:36:00 -0000"},
               {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}};
  const std::vector<std::string> names = {"content-type", "date", "host"};
  auto creq = canonical_request(r, names, sha256_hex(r.body));
  ASSERT_TRUE(creq.ok());
  const std::string sig = suite_signature(*creq);
  r.headers.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                                          "aws4_request, SignedHeaders=content-type;date;host, Signature=" + sig);
  auto v = check(r);
  ASSERT_TRUE(v.ok()) << describe(v);
  EXPECT_EQ(v->timestamp, kSuiteTime);
  EXPECT_EQ(code_of(check(r, kSuiteTime + 901)), Code::kRequestExpired);
  set_header(r, "date", "yesterday");
  EXPECT_EQ(code_of(check(r)), Code::kIncompleteSignature);
}

TEST(Verify, MalformedDatingAndDuplicates) {
  {
    Request r = suite_request("get-vanilla");
    set_header(r, "x-amz-date", "2015-08-30T12:36:00Z");
    EXPECT_EQ(code_of(check(r)), Code::kIncompleteSignature);
  }
  {
    Request r = suite_request("get-vanilla");
    r.headers.emplace_back("X-Amz-Date", "20150830T123600Z");
    EXPECT_EQ(code_of(check(r)), Code::kIncompleteSignature);
  }
  {
    Request r = suite_request("get-vanilla");
    r.headers.emplace_back("authorization", header(r, "authorization"));
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kIncompleteSignature);
    EXPECT_NE(v.error().message().find("more than one Authorization"), std::string::npos);
  }
  {
    Request r = suite_request("get-vanilla");
    set_header(r, "authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request");
    EXPECT_EQ(code_of(check(r)), Code::kIncompleteSignature);
  }
  {
    Request r = suite_request("get-vanilla");  // both mechanisms at once
    r.query = "X-Amz-Algorithm=AWS4-HMAC-SHA256";
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kIncompleteSignature);
    EXPECT_NE(v.error().message().find("only one authentication mechanism"), std::string::npos);
  }
}

TEST(Verify, ContentSha256Header) {
  Request r;
  r.method = "POST";
  r.path = "/";
  r.body = "Action=DescribeRegions";
  r.headers = {{"Host", "ec2.amazonaws.com"}};
  SignOptions so;
  so.content_sha256_header = true;
  ASSERT_TRUE(sign(r, Credentials{kAkid, kSecret, ""}, "us-east-1", "service", kSuiteTime, so).ok());
  EXPECT_TRUE(check(r).ok());
  Request upper = r;  // the declared hash in upper case: checked case-insensitively
  std::string h = header(r, "x-amz-content-sha256");
  for (char& c : h) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  set_header(upper, "x-amz-content-sha256", h);
  EXPECT_EQ(code_of(check(upper)), Code::kAuthFailure);  // checked, but signed as sent
  Request unsigned_payload = r;
  set_header(unsigned_payload, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
  auto v = check(unsigned_payload);
  EXPECT_EQ(code_of(v), Code::kIncompleteSignature);
  EXPECT_NE(v.error().message().find("presigned requests only"), std::string::npos);
  Request streaming = r;
  set_header(streaming, "x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
  EXPECT_EQ(code_of(check(streaming)), Code::kIncompleteSignature);
  Request twice = r;
  twice.headers.emplace_back("x-amz-content-sha256", header(r, "x-amz-content-sha256"));
  EXPECT_EQ(code_of(check(twice)), Code::kIncompleteSignature);
}

// ---- verify(): presigned ---------------------------------------------------------------

TEST(Presigned, ExpiryAndValidityWindow) {
  const Request req = suite_request("get-vanilla", true);
  EXPECT_TRUE(check(req, kSuiteTime).ok());
  EXPECT_TRUE(check(req, kSuiteTime + 3600).ok());
  EXPECT_TRUE(check(req, kSuiteTime - 900).ok());
  auto expired = check(req, kSuiteTime + 3601);
  EXPECT_EQ(code_of(expired), Code::kRequestExpired);
  EXPECT_NE(expired.error().message().find("Request has expired"), std::string::npos);
  EXPECT_EQ(code_of(check(req, kSuiteTime - 901)), Code::kRequestExpired);
  Options o = suite_options();
  o.allow_presigned = false;
  EXPECT_EQ(code_of(check(req, kSuiteTime, o)), Code::kAuthFailure);
}

TEST(Presigned, WithoutExpiresTheSkewApplies) {
  Request r;
  r.method = "GET";
  r.path = "/";
  r.headers = {{"Host", "example.amazonaws.com"}};
  r.query = std::string(kPresignedPrefix) + "&X-Amz-SignedHeaders=host";
  auto creq = canonical_request(r, {"host"}, sha256_hex(""), true);
  ASSERT_TRUE(creq.ok());
  r.query += "&X-Amz-Signature=" + suite_signature(*creq);
  EXPECT_TRUE(check(r, kSuiteTime + 900).ok());
  EXPECT_EQ(code_of(check(r, kSuiteTime + 901)), Code::kRequestExpired);
}

TEST(Presigned, MalformedParameters) {
  const Request good = suite_request("get-vanilla", true);
  auto with = [&good](std::string_view name, std::string_view replacement) {
    Request r = good;
    const size_t at = r.query.find(std::string(name) + "=");
    const size_t end = r.query.find('&', at);
    r.query.replace(at, (end == std::string::npos ? r.query.size() : end) - at, replacement);
    return r;
  };
  struct {
    Request r;
    Code code;
    const char* what;
  } cases[] = {
      {with("X-Amz-Signature", "X-Amz-Foo=1"), Code::kIncompleteSignature, "no signature"},
      {with("X-Amz-Credential", "X-Amz-Foo=1"), Code::kIncompleteSignature, "no credential"},
      {with("X-Amz-Date", "X-Amz-Foo=1"), Code::kIncompleteSignature, "no date"},
      {with("X-Amz-SignedHeaders", "X-Amz-Foo=1"), Code::kIncompleteSignature, "no signed headers"},
      {with("X-Amz-Algorithm", "X-Amz-Algorithm=AWS4-HMAC-SHA1"), Code::kIncompleteSignature, "algorithm"},
      {with("X-Amz-Expires", "X-Amz-Expires=0"), Code::kIncompleteSignature, "expires 0"},
      {with("X-Amz-Expires", "X-Amz-Expires=604801"), Code::kIncompleteSignature, "expires > 7 days"},
      {with("X-Amz-Expires", "X-Amz-Expires=-5"), Code::kIncompleteSignature, "expires negative"},
      {with("X-Amz-Expires", "X-Amz-Expires=99999999999999999999"), Code::kIncompleteSignature, "expires huge"},
      {with("X-Amz-Expires", "X-Amz-Expires=3600&X-Amz-Expires=3600"), Code::kIncompleteSignature, "duplicate"},
      {with("X-Amz-Date", "X-Amz-Date=20150830"), Code::kIncompleteSignature, "date format"},
      {with("X-Amz-Signature", "X-Amz-Signature=abc"), Code::kIncompleteSignature, "short signature"},
      {with("X-Amz-SignedHeaders", "X-Amz-SignedHeaders=x-amz-date"), Code::kIncompleteSignature, "host unsigned"},
      {with("X-Amz-Credential", "X-Amz-Credential=AKIDEXAMPLE%2F20150830"), Code::kIncompleteSignature, "credential"},
      {with("X-Amz-Expires", "X-Amz-Expires=3599"), Code::kAuthFailure, "expires changed"},
      {with("X-Amz-Signature", "X-Amz-Signature=" + std::string(64, 'a')), Code::kAuthFailure, "wrong signature"},
      {with("X-Amz-Expires", "X-Amz-Expires=3600&Action=TerminateInstances"), Code::kAuthFailure, "added param"},
      {with("X-Amz-Expires", "X-Amz-Expires=3600&a=%zz"), Code::kMalformedQueryString, "bad escape"},
  };
  for (const auto& c : cases) {
    auto v = check(c.r);
    EXPECT_EQ(code_of(v), c.code) << c.what << ": " << describe(v);
  }
}

TEST(Presigned, UnsignedPayloadOnlyWhenAllowed) {
  Request r;
  r.method = "PUT";
  r.path = "/object";
  r.body = "anything";
  r.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"}};
  r.query = std::string(kPresignedPrefix) + "&X-Amz-Expires=60&X-Amz-SignedHeaders=host";
  auto creq = canonical_request(r, {"host"}, kUnsignedPayload, true);
  ASSERT_TRUE(creq.ok());
  r.query += "&X-Amz-Signature=" + suite_signature(*creq);
  EXPECT_EQ(code_of(check(r)), Code::kIncompleteSignature);
  Options o = suite_options();
  o.allow_unsigned_payload = true;
  auto v = check(r, kSuiteTime, o);
  ASSERT_TRUE(v.ok()) << describe(v);
  EXPECT_FALSE(v->payload_signed);
}

// ---- bounds ----------------------------------------------------------------------------

TEST(Bounds, OversizedRequestsAreRefusedWithClearErrors) {
  const Request good = suite_request("get-vanilla");
  {
    Request r = good;
    for (int i = 0; i < 200; ++i) r.headers.emplace_back("X-Pad", "1");
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kIncompleteSignature);
    EXPECT_NE(v.error().message().find("too many headers"), std::string::npos);
  }
  {
    Request r = good;
    r.headers.emplace_back("X-Pad", std::string(70000, 'a'));
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kIncompleteSignature);
    EXPECT_NE(v.error().message().find("headers too large"), std::string::npos);
  }
  {
    Request r = good;
    r.query = std::string(300000, 'a');
    EXPECT_EQ(code_of(check(r)), Code::kMalformedQueryString);
  }
  {
    Request r = good;
    for (int i = 0; i < 5000; ++i) r.query += "a=1&";
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kMalformedQueryString);
    EXPECT_NE(v.error().message().find("more than 4096"), std::string::npos);
  }
  {
    Request r = good;
    r.path = "/" + std::string(9000, 'a');
    EXPECT_EQ(code_of(check(r)), Code::kIncompleteSignature);
  }
  {
    Request r = good;
    r.method = std::string(40, 'G');
    EXPECT_EQ(code_of(check(r)), Code::kIncompleteSignature);
  }
  {
    Request r = good;  // the messages show client input escaped and cut short
    set_header(r, "authorization", "\x01\xff" + std::string(500, 'Z'));
    auto v = check(r);
    EXPECT_EQ(code_of(v), Code::kIncompleteSignature);
    EXPECT_LT(v.error().message().size(), 200u);
    EXPECT_NE(v.error().message().find("\\x01\\xFF"), std::string::npos);
  }
}

// ---- the client side on an EC2 request ---------------------------------------------------

TEST(Client, SignsAndVerifiesAnEc2QueryRequest) {
  Request r;
  r.method = "POST";
  r.path = "/";
  r.body = "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3AName&Filter.1.Value.1=a%20b";
  r.headers = {{"Host", "ec2.eu-west-3.amazonaws.com"},
               {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
               {"User-Agent", "azote"}};
  const Credentials creds{"ASIAEXAMPLE0000001", "secret/with+chars", "session-token=="};
  const std::time_t now = 1796644800;  // 2026-12-07T12:00:00Z
  ASSERT_TRUE(sign(r, creds, "eu-west-3", "ec2", now).ok());
  EXPECT_EQ(header(r, "x-amz-date"), "20261207T120000Z");
  const std::string auth = header(r, "authorization");
  EXPECT_TRUE(auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE0000001/20261207/eu-west-3/ec2/aws4_request, "
                               "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="))
      << auth;
  Options o;  // service ec2
  o.regions = {"eu-west-3"};
  auto lookup = [&creds](std::string_view akid, std::string_view token) -> std::optional<std::string> {
    if (akid == creds.access_key_id && token == creds.session_token) return creds.secret_access_key;
    return std::nullopt;
  };
  auto v = verify(r, lookup, now + 60, o);
  ASSERT_TRUE(v.ok()) << describe(v);
  EXPECT_EQ(v->session_token, "session-token==");
  EXPECT_EQ(v->service, "ec2");

  Request p;
  p.method = "GET";
  p.path = "/";
  p.query = "Action=DescribeRegions&Version=2016-11-15";
  p.headers = {{"Host", "ec2.eu-west-3.amazonaws.com"}};
  ASSERT_TRUE(presign(p, creds, "eu-west-3", "ec2", now, std::chrono::seconds(300)).ok());
  v = verify(p, lookup, now + 300, o);
  ASSERT_TRUE(v.ok()) << describe(v);
  EXPECT_TRUE(v->presigned);
  EXPECT_EQ(code_of(verify(p, lookup, now + 301, o)), Code::kRequestExpired);

  Request no_host;
  no_host.method = "GET";
  EXPECT_FALSE(sign(no_host, creds, "eu-west-3", "ec2", now).ok());
  EXPECT_FALSE(presign(p, creds, "eu-west-3", "ec2", now, std::chrono::seconds(300)).ok());  // already presigned
  EXPECT_FALSE(sign(r, Credentials{"bad key!", "s", ""}, "eu-west-3", "ec2", now).ok());
}

}  // namespace
}  // namespace azote::sigv4
