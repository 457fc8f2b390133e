// Shared by lib/etcd's tests: a fixture owning an EtcdCluster and a Client of it, which
// prints the members' log tails when a test fails.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include "etcd/client.hpp"
#include "etcd/testing.hpp"

namespace azote::etcd {

class EtcdTest : public ::testing::Test {
 protected:
  void start_cluster(testing::ClusterOptions options = {}) {
    auto c = testing::EtcdCluster::start(options);
    ASSERT_TRUE(c.ok()) << c.error().message();
    cluster_ = std::move(c).value();
    auto client = cluster_->client();
    ASSERT_TRUE(client.ok()) << client.error().describe();
    client_.emplace(std::move(client).value());
  }
  void TearDown() override {
    if (HasFailure() && cluster_) std::cerr << "etcd logs:\n" << cluster_->log_tail(25);
  }
  Client& client() { return *client_; }

  std::unique_ptr<testing::EtcdCluster> cluster_;
  std::optional<Client> client_;
};

// Polls `pred` every 20 ms until it holds or `timeout` passes.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace azote::etcd
