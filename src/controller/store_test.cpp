#include "controller/store.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <filesystem>

#include "vpc_model/model.hpp"

namespace azote::controller {

using namespace vpc_model;  // the VPC as EC2 models it (lib/vpc_model)
namespace {

struct TempDb {
  TempDb() : path("/tmp/azote-store-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".db") { clean(); }
  ~TempDb() { clean(); }
  void clean() {
    for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(path + s);
  }
  static inline int n = 0;
  std::string path;
};

// The schema as the controller before the VPC wrote it (migrations 1 and 2), with an
// instance in it: opening it with today's Store migrates it and keeps the instance.
TEST(Store, MigratesAnOlderDatabase) {
  TempDb t;
  {
    auto db = sqlite::Db::open(t.path);
    ASSERT_TRUE(db.ok());
    constexpr std::array<std::string_view, 2> kOld = {R"sql(
CREATE TABLE instances (
  id TEXT PRIMARY KEY, reservation_id TEXT NOT NULL, image_id TEXT NOT NULL, type TEXT NOT NULL,
  state TEXT NOT NULL, reason_code TEXT NOT NULL, reason_message TEXT NOT NULL, launch_time TEXT NOT NULL,
  vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL, user_data BLOB NOT NULL, tags TEXT NOT NULL,
  client_token TEXT NOT NULL, hv_pid INTEGER NOT NULL, hv_starttime INTEGER NOT NULL);
CREATE TABLE volumes (
  id TEXT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL, create_time TEXT NOT NULL,
  client_token TEXT NOT NULL, file TEXT NOT NULL, size_gib INTEGER NOT NULL, iops INTEGER NOT NULL,
  throughput_mbps INTEGER NOT NULL, encrypted INTEGER NOT NULL, wrapped_key BLOB NOT NULL, tags TEXT NOT NULL,
  instance_id TEXT NOT NULL, device TEXT NOT NULL, attach_state TEXT NOT NULL, delete_on_termination INTEGER NOT NULL);
CREATE TABLE images (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, kernel TEXT NOT NULL,
  kernel_sha256 TEXT NOT NULL, initrd TEXT NOT NULL, initrd_sha256 TEXT NOT NULL, cmdline TEXT NOT NULL,
  root_content TEXT NOT NULL, root_sha256 TEXT NOT NULL, creation_date TEXT NOT NULL, root_size_gib INTEGER NOT NULL);
CREATE TABLE tokens (token TEXT PRIMARY KEY, kind TEXT NOT NULL, request_hash TEXT NOT NULL, result TEXT NOT NULL);
CREATE TABLE cards (name TEXT PRIMARY KEY, pid INTEGER NOT NULL, starttime INTEGER NOT NULL);
)sql",
                                                      R"sql(
ALTER TABLE volumes ADD COLUMN import_from TEXT NOT NULL DEFAULT '';
)sql"};
    ASSERT_TRUE(db->migrate(kOld).ok());
    ASSERT_TRUE(db->run("INSERT INTO instances VALUES ('i-0123456789abcdef0','r-0123456789abcdef0','ami-builtin',"
                        "'t3.nano','stopped','','','2025-01-01T00:00:00.000Z',2,512,x'',  '[]','',0,0)")
                    .ok());
  }
  auto s = Store::open(t.path);
  ASSERT_TRUE(s.ok()) << s.error().message();
  auto is = s->instances();
  ASSERT_TRUE(is.ok()) << is.error().message();
  ASSERT_EQ(is->size(), 1u);
  EXPECT_EQ(is->front().id, "i-0123456789abcdef0");
  EXPECT_EQ(is->front().http_tokens, "optional") << "the default for instances made before the column";
  EXPECT_TRUE(s->enis()->empty());
  EXPECT_TRUE(s->vpcs()->empty());
  // Written back with the new column.
  InstanceRec r = is->front();
  r.http_tokens = "required";
  ASSERT_TRUE(s->put(r).ok());
  EXPECT_EQ(s->instances()->front().http_tokens, "required");
}

TEST(Store, NetworkRecordsRoundTripAndAddressesAreUnique) {
  TempDb t;
  auto s = Store::open(t.path);
  ASSERT_TRUE(s.ok()) << s.error().message();
  const VpcRec v{"vpc-0123456789abcdef0", "10.0.0.0/16", true};
  const SubnetRec sn{"subnet-0123456789abcdef0", v.id, "10.0.1.0/24", "local-1a", true};
  SecurityGroupRec g{"sg-0123456789abcdef0", v.id, "default", "default VPC security group",
                     default_group_ingress("sg-0123456789abcdef0"), default_egress()};
  g.ingress.push_back(vpc::Rule::tcp(22, 22, *parse_cidr("192.168.0.0/16")));
  ASSERT_TRUE(s->put_network(v, sn, g).ok());
  EXPECT_EQ(s->vpcs()->at(0).cidr, "10.0.0.0/16");
  EXPECT_TRUE(s->vpcs()->at(0).is_default);
  EXPECT_EQ(s->subnets()->at(0).availability_zone, "local-1a");
  auto groups = s->security_groups();
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ(groups->at(0).ingress, g.ingress);
  EXPECT_EQ(groups->at(0).egress, g.egress);
  // A second group named "default" in the same VPC is refused by the schema too.
  SecurityGroupRec dup = g;
  dup.id = "sg-0123456789abcdef1";
  EXPECT_FALSE(s->put(dup).ok());

  const EniRec a{"eni-0123456789abcdef0", "i-0123456789abcdef0", sn.id, v.id, "02:00:00:00:00:01", "10.0.1.4", {g.id}};
  ASSERT_TRUE(s->put_all({}, {}, std::nullopt, {a}).ok());
  EniRec same_ip = a;
  same_ip.id = "eni-0123456789abcdef1";
  same_ip.mac = "02:00:00:00:00:02";
  EXPECT_FALSE(s->put(same_ip).ok()) << "two ENIs with one address in a VPC";
  EniRec same_mac = a;
  same_mac.id = "eni-0123456789abcdef1";
  same_mac.private_ip = "10.0.1.5";
  EXPECT_FALSE(s->put(same_mac).ok()) << "two ENIs with one MAC";
  auto enis = s->enis();
  ASSERT_TRUE(enis.ok());
  ASSERT_EQ(enis->size(), 1u);
  EXPECT_EQ(enis->at(0).groups, std::vector<std::string>{g.id});
  EXPECT_EQ(enis->at(0).private_ip, "10.0.1.4");
  ASSERT_TRUE(s->erase_eni(a.id).ok());
  EXPECT_TRUE(s->enis()->empty());
  ASSERT_TRUE(s->put(same_ip).ok()) << "a released address can be used again";
  ASSERT_TRUE(s->erase_security_group(g.id).ok());
  EXPECT_TRUE(s->security_groups()->empty());
}

}  // namespace
}  // namespace azote::controller
