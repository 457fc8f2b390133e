// EC2's timestamps: ISO 8601 in UTC with milliseconds, "2026-12-07T21:00:00.000Z".
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace azote::ec2api {

using Timestamp = std::chrono::sys_time<std::chrono::milliseconds>;

// "YYYY-MM-DDTHH:MM:SS.mmmZ" (years 0000..9999; others are clamped to that range).
std::string format_timestamp(Timestamp t);

// "YYYY-MM-DDTHH:MM:SSZ" or with a fraction of 1 to 9 digits (botocore sends microseconds),
// truncated to milliseconds; nullopt for anything else (an offset other than Z included).
std::optional<Timestamp> parse_timestamp(std::string_view s);

}  // namespace azote::ec2api
