// The two encryptions of a data key (src/kms/DESIGN.md, "Ciphertexts"):
//   CiphertextBlob: AES-256-GCM under a KMS key, a random 96-bit nonce, the key id as
//     AAD; the blob names its key so Decrypt needs no KeyId:
//       0x01 | len(key id) | key id | nonce (12) | ciphertext (= data key length) | tag (16)
//   CiphertextForRecipient: RSAES-OAEP with SHA-256 (and MGF1-SHA-256, empty label) to
//     the attestation document's public_key: one raw OAEP block, not AWS's CMS
//     EnvelopedData.
#pragma once

#include <openssl/evp.h>

#include <span>
#include <string>

#include "kms/codec.hpp"
#include "kms/errors.hpp"

namespace azote::kms {

inline constexpr size_t kKeyBytes = 32;  // AES-256
inline constexpr uint8_t kBlobVersion = 1;
inline constexpr size_t kGcmNonceBytes = 12;
inline constexpr size_t kGcmTagBytes = 16;
// Data keys: AES_256 (32 bytes, the default), AES_128 (16) or NumberOfBytes 1..64, so
// that one OAEP block to the smallest allowed RSA key (2048 bits: 190 bytes) holds it.
inline constexpr size_t kMaxDataKeyBytes = 64;
// Encrypt's Plaintext (admin only): the same bound, since a later Decrypt hands it to the
// recipient as one OAEP block, exactly like a data key.
inline constexpr size_t kMaxPlaintextBytes = kMaxDataKeyBytes;

KmsResult<Bytes> seal_blob(const SecretBytes& key, const std::string& key_id, std::span<const uint8_t> data_key);
// The key id a blob names (kInvalidCiphertext if it is not a blob of this format).
KmsResult<std::string> blob_key_id(std::span<const uint8_t> blob);
// The data key (kInvalidCiphertext if the tag does not verify: another key, or a
// changed byte).
KmsResult<SecretBytes> open_blob(const SecretBytes& key, std::span<const uint8_t> blob);

// RSAES-OAEP-SHA-256 of `plain` to `rsa_public`.
KmsResult<Bytes> oaep_sha256_encrypt(EVP_PKEY* rsa_public, std::span<const uint8_t> plain);

}  // namespace azote::kms
