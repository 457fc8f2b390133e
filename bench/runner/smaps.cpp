#include "smaps.hpp"

#include <cstdio>
#include <sstream>

namespace azote::bench {
namespace {

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

bool is_header(const std::string& line) {
  // "start-end perms offset dev inode [path]": the first token holds a '-' between hex numbers,
  // field lines ("Rss:   4 kB") have a ':' at the end of their first token.
  const auto sp = line.find(' ');
  if (sp == std::string::npos) {
    return false;
  }
  const std::string first = line.substr(0, sp);
  return first.find('-') != std::string::npos && first.back() != ':';
}

}  // namespace

std::vector<Mapping> parse_smaps(const std::string& text) {
  std::vector<Mapping> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (is_header(line)) {
      Mapping m;
      std::istringstream h(line);
      std::string range;
      std::string offset;
      std::string dev;
      std::string inode;
      h >> range >> m.perms >> offset >> dev >> inode;
      std::getline(h, m.path);
      const auto first = m.path.find_first_not_of(' ');
      m.path = first == std::string::npos ? std::string() : m.path.substr(first);
      unsigned long long s = 0;
      unsigned long long e = 0;
      if (std::sscanf(range.c_str(), "%llx-%llx", &s, &e) == 2) {
        m.start = s;
        m.end = e;
      }
      out.push_back(std::move(m));
      continue;
    }
    if (out.empty()) {
      continue;
    }
    long v = 0;
    char key[64] = {};
    if (std::sscanf(line.c_str(), "%63[^:]: %ld kB", key, &v) != 2) {
      continue;
    }
    const std::string k(key);
    if (k == "Rss") {
      out.back().rss_kib = v;
    } else if (k == "Pss") {
      out.back().pss_kib = v;
    } else if (k == "Anonymous") {
      out.back().anon_kib = v;
    }
  }
  return out;
}

MemorySplit split_guest_memory(const std::vector<Mapping>& maps, long guest_mem_kib) {
  MemorySplit s;
  for (const auto& m : maps) {
    const bool memfd = m.path.find("/memfd:") != std::string::npos;
    const bool anon = m.path.empty() || starts_with(m.path, "[anon");
    const bool big_rw = m.perms.size() >= 2 && m.perms[0] == 'r' && m.perms[1] == 'w' &&
                        m.size_kib() >= static_cast<std::uint64_t>(guest_mem_kib);
    if (memfd || (anon && big_rw)) {
      s.guest_rss_kib += m.rss_kib;
      char desc[160];
      std::snprintf(desc, sizeof desc, "%llx-%llx %s size=%llu KiB rss=%ld KiB",
                    static_cast<unsigned long long>(m.start),
                    static_cast<unsigned long long>(m.end),
                    m.path.empty() ? "[anonymous]" : m.path.c_str(),
                    static_cast<unsigned long long>(m.size_kib()), m.rss_kib);
      s.guest_mappings.emplace_back(desc);
      continue;
    }
    s.other_rss_kib += m.rss_kib;
    s.other_pss_kib += m.pss_kib;
    s.other_anon_kib += m.anon_kib;
    if (!anon && !starts_with(m.path, "[")) {
      s.other_file_rss_kib += m.rss_kib - m.anon_kib;
    }
  }
  return s;
}

}  // namespace azote::bench
