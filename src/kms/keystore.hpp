// The keys of azote-kms in its state directory (src/kms/DESIGN.md, "State"):
//   DIR/                 0700, this uid's
//   DIR/keys/KEY.key     32 random bytes (AES-256), 0600
//   DIR/keys/KEY.policy  the key policy, JSON, 0600
// KEY is "key-" and 16 lowercase hex digits. A key's bytes are read from its file for
// each request that uses it and wiped right after (SecretBytes); the service keeps no
// key in memory between requests. Every file is reached through the directory's
// descriptor with O_NOFOLLOW, and refused unless it is a regular file of this uid with
// no access for group or others.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/unique_fd.hpp"
#include "kms/codec.hpp"
#include "kms/errors.hpp"
#include "kms/policy.hpp"

namespace azote::kms {

// "key-" + 16 lowercase hex digits.
bool valid_key_id(const std::string& id);

class KeyStore {
 public:
  // Opens DIR (creating DIR and DIR/keys, 0700, when missing); refused (kState) unless
  // both are directories of this uid with no access for group or others.
  static KmsResult<KeyStore> open(const std::string& state_dir);

  // A new key with `policy` (checked: kMalformedPolicy), its id.
  KmsResult<std::string> create_key(const nlohmann::json& policy);
  // kNotFound when there is no such key; kInternal when its file is not a key.
  KmsResult<SecretBytes> load_key(const std::string& id) const;
  // The key's policy, parsed; the text as JSON in `raw` if asked.
  KmsResult<Policy> load_policy(const std::string& id, nlohmann::json* raw = nullptr) const;
  // Every key id, sorted.
  KmsResult<std::vector<std::string>> list() const;
  const std::string& dir() const { return dir_; }

 private:
  KeyStore(std::string dir, UniqueFd keys) : dir_(std::move(dir)), keys_(std::move(keys)) {}
  std::string dir_;
  UniqueFd keys_;  // DIR/keys
};

// The file of at most `max` bytes at `name` beneath `dirfd` (a regular file of this uid,
// 0600 or narrower), as secret bytes. errno-style sentence on failure; ENOENT in *err.
KmsResult<SecretBytes> read_private_file(int dirfd, const std::string& name, const std::string& shown, size_t max,
                                         int* errnum = nullptr);

}  // namespace azote::kms
