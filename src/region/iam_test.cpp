#include "region/iam.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/temp_dir.hpp"

namespace azote::region {
namespace {

using Json = nlohmann::json;

Policy policy(const char* text) {
  auto p = parse_policy(Json::parse(text));
  EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error());
  return p.ok() ? *p : Policy{};
}

TEST(Iam, WildcardsMatchAsIamDoes) {
  EXPECT_TRUE(wildcard_match("ec2:Describe*", "ec2:DescribeInstances", true));
  EXPECT_TRUE(wildcard_match("ec2:describe*", "ec2:DescribeInstances", true));
  EXPECT_FALSE(wildcard_match("ec2:describe*", "ec2:DescribeInstances", false));
  EXPECT_TRUE(wildcard_match("ec2:*Instances", "ec2:RunInstances", true));
  EXPECT_FALSE(wildcard_match("ec2:*Instances", "ec2:RunInstance", true));
  EXPECT_TRUE(wildcard_match("ec2:?unInstances", "ec2:RunInstances", true));
  EXPECT_TRUE(wildcard_match("*", "", false));
  EXPECT_FALSE(wildcard_match("a", "", false));
  EXPECT_TRUE(wildcard_match("arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:us-east-1:000000000000:instance/i-1", false));
  EXPECT_FALSE(wildcard_match("arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:us-east-1:000000000000:instance/i-1", false));
  // Many stars against a long text: linear, not exponential.
  EXPECT_FALSE(wildcard_match("*a*a*a*a*a*a*a*a*a*a*b", std::string(4000, 'a'), false));
}

TEST(Iam, ExplicitDenyWinsOverAnyAllow) {
  const Policy p = policy(R"({"Version": "2012-10-17", "Statement": [
      {"Sid": "all", "Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
      {"Sid": "noterm", "Effect": "Deny", "Action": "ec2:TerminateInstances",
       "Resource": "arn:aws:ec2:*:*:instance/i-protected*"}]})");
  EXPECT_TRUE(evaluate(p, "ec2:RunInstances", {"*"}).allowed());
  EXPECT_TRUE(evaluate(p, "ec2:TerminateInstances", {"arn:aws:ec2:r:1:instance/i-other"}).allowed());
  const Decision d = evaluate(p, "ec2:TerminateInstances",
                              {"arn:aws:ec2:r:1:instance/i-other", "arn:aws:ec2:r:1:instance/i-protected1"});
  EXPECT_EQ(d.effect, Effect::kExplicitDeny);
  EXPECT_EQ(d.sid, "noterm");
}

TEST(Iam, NothingIsAllowedWithoutAnAllowForEveryResource) {
  const Policy p = policy(R"({"Statement": {"Effect": "Allow", "Action": ["ec2:Describe*", "ec2:StopInstances"],
                               "Resource": "arn:aws:ec2:*:*:instance/i-mine*"}})");
  EXPECT_EQ(evaluate(p, "ec2:RunInstances", {"*"}).effect, Effect::kImplicitDeny);
  EXPECT_TRUE(evaluate(p, "ec2:StopInstances", {"arn:aws:ec2:r:1:instance/i-mine1"}).allowed());
  EXPECT_EQ(evaluate(p, "ec2:StopInstances", {"arn:aws:ec2:r:1:instance/i-mine1", "arn:aws:ec2:r:1:instance/i-yours"})
                .effect,
            Effect::kImplicitDeny);
  const Policy na = policy(R"({"Statement": [{"Effect": "Allow", "NotAction": "ec2:Terminate*", "Resource": "*"}]})");
  EXPECT_TRUE(na.statements[0].not_action);
  EXPECT_TRUE(evaluate(na, "ec2:RunInstances", {"*"}).allowed());
  EXPECT_FALSE(evaluate(na, "ec2:TerminateInstances", {"*"}).allowed());
}

TEST(Iam, WhatTheSubsetDoesNotEvaluateIsRefusedNotSkipped) {
  for (const char* bad : {
           R"({"Statement": [{"Effect": "Deny", "Action": "ec2:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})",
           R"({"Statement": [{"Effect": "Allow", "Action": "ec2:*", "NotResource": "x"}]})",
           R"({"Statement": [{"Effect": "Maybe", "Action": "ec2:*", "Resource": "*"}]})",
           R"({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]})",
           R"({"Statement": [{"Effect": "Allow", "Resource": "*"}]})",
           R"({"Statement": []})",
           R"({"Version": "2008-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]})",
           R"({"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]})",
       }) {
    EXPECT_FALSE(parse_policy(Json::parse(bad)).ok()) << bad;
  }
}

TEST(Iam, ThePrincipalsFileIsOwnerOnlyAndComplete) {
  TempDir dir("iam");
  const std::string path = dir.path() + "/principals.json";
  const Principal made = new_principal("admin", policy(R"({"Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]})"));
  EXPECT_EQ(made.access_key_id.size(), 20u);
  EXPECT_EQ(made.access_key_id.rfind("AKIA", 0), 0u);
  EXPECT_EQ(made.secret_access_key.size(), 40u);
  EXPECT_NE(new_principal("b", {}).secret_access_key, made.secret_access_key);
  std::ofstream(path) << Json{{"principals", {principal_json(made)}}}.dump();
  ::chmod(path.c_str(), 0644);
  auto r = load_principals(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("chmod 600"), std::string::npos) << r.error();
  ::chmod(path.c_str(), 0600);
  r = load_principals(path);
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].secret_access_key, made.secret_access_key);
  EXPECT_TRUE(evaluate((*r)[0].policy, "ec2:RunInstances", {"*"}).allowed());
  std::ofstream(path) << Json{{"principals", {principal_json(made), principal_json(made)}}}.dump();
  r = load_principals(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("twice"), std::string::npos) << r.error();
}

}  // namespace
}  // namespace azote::region
