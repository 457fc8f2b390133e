#include "ec2api/shapes.hpp"

namespace azote::ec2api {

namespace {

struct StateRow {
  InstanceStateName state;
  int code;
  std::string_view name;
};
constexpr StateRow kStates[] = {
    {InstanceStateName::kPending, 0, "pending"},        {InstanceStateName::kRunning, 16, "running"},
    {InstanceStateName::kShuttingDown, 32, "shutting-down"}, {InstanceStateName::kTerminated, 48, "terminated"},
    {InstanceStateName::kStopping, 64, "stopping"},     {InstanceStateName::kStopped, 80, "stopped"},
};

}  // namespace

InstanceState instance_state(InstanceStateName s) {
  for (const auto& r : kStates)
    if (r.state == s) return InstanceState{r.code, std::string(r.name)};
  return InstanceState{0, "pending"};
}

std::optional<InstanceStateName> parse_instance_state_name(std::string_view name) {
  for (const auto& r : kStates)
    if (r.name == name) return r.state;
  return std::nullopt;
}

}  // namespace azote::ec2api
