// The vpc_policy module's one error type (configuration calls only: the data path,
// PolicyEngine::process(), never fails, it decides).
#pragma once

#include "base/error.hpp"

namespace azote::vpc {

enum class VpcErrc {
  kInvalid = 1,  // a malformed argument: rule, CIDR, id, timeout out of range
  kNotFound,     // no such group, rule or interface
  kExists,       // a group or interface with that id already exists
  kDuplicate,    // the group already has that exact rule (EC2 InvalidPermission.Duplicate)
  kLimit,        // a quota: rules per group and direction, groups per interface
  kInUse,        // a group still attached to an interface or referenced by another group
};

using VpcError = Error<VpcErrc>;
template <class T>
using VpcResult = Result<T, VpcError>;

}  // namespace azote::vpc
