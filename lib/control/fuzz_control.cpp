// libFuzzer target for the control server: arbitrary byte streams from up to kClients
// clients over real unix sockets, into one Server that the target serves after every
// step, the way a card's loop does. Each input is a sequence of records, one byte
//
//   bits 0-4  which client (modulo kClients; connected on first use, and again after a close)
//   bits 5-7  what it does:
//     0-2  sends the next n bytes (u16 n, little-endian, then up to n bytes of the input)
//     3    sends one byte repeated (u8 byte, u8 k: k * 1024 + 1 bytes): over-long lines
//     4    reads what the server has sent it
//     5    shuts down its writing side (EOF after what it sent)
//     6    closes
//     7    serve_ready u8 more times
//
// Sends never wait: what the socket does not take is dropped, as a hostile client's
// would be. Checked beyond ASan/UBSan: the server never holds more than kMaxClients, nor
// more bytes than its per-client bound allows for the clients it has; every line it
// sends is a JSON object with a boolean "ok"; serve_ready returns (libFuzzer's -timeout
// catches a block); and once every client has gone, the server lets go of all of them.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "base/log.hpp"
#include "control/control.hpp"

using namespace azote;
using namespace azote::control;

namespace {

constexpr size_t kClients = 20;  // more than kMaxClients: the refusal path too
// Blobs big enough to fill a socket and the server's buffer in a few answers, small
// enough that an instrumented dump of one stays cheap.
constexpr size_t kMaxBlob = 16 * 1024;
// The longest answer the handler below gives: a request's "op" echoed (never longer
// once re-serialized than it was) plus the JSON around it.
constexpr size_t kMaxAnswer = kMaxLineBytes + 256;
// kMaxLineBytes plus one read of requests, kMaxPendingOutput plus one answer.
constexpr size_t kPerClientBound = kMaxLineBytes + 8192 + kMaxPendingOutput + kMaxAnswer;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Answers of every kind and size the server has to frame; nothing here copies or dumps
// the request, whose depth the fuzzer controls.
Json handle(const Json& r) {
  const std::string op = r["op"].get<std::string>();
  if (op == "blob") {
    // Only an unsigned number: a float converted to size_t is undefined (the fuzzer
    // found that in this harness, not in the server).
    const auto n = r.find("n");
    const size_t want = n != r.end() && n->is_number_unsigned() ? n->get<size_t>() : 0;
    return Json{{"blob", std::string(std::min<size_t>(want, kMaxBlob), 'b')}};
  }
  if (op == "throw") return Json{{"x", r.at("missing").get<int>()}};
  if (op == "array") return Json::array();
  if (op == "nok") return Json{{"ok", false}};
  if (op == "refuse") return refuse("refused: " + op);
  return Json{{"op", op}, {"fields", r.size()}};
}

Server& server() {
  static const std::unique_ptr<Server> s = [] {
    log::set_level(log::Level::kError);  // refusals and drops are the point here, not news
    auto l = Server::listen("/tmp/azote-fuzz-control-" + std::to_string(::getpid()) + ".sock");
    if (!l) {
      std::fprintf(stderr, "fuzz_control: %s\n", l.error().message().c_str());
      std::abort();
    }
    return std::move(l).value();
  }();
  return *s;
}

struct FuzzClient {
  UniqueFd fd;
  std::string in;  // what the server sent, not yet a whole line
};

void serve() {
  Server& s = server();
  s.serve_ready(handle);
  check(s.clients() <= kMaxClients);
  check(s.buffered_bytes() <= s.clients() * kPerClientBound);
}

bool connect_client(FuzzClient& c, const std::string& path) {
  c.fd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  c.in.clear();
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  // A full backlog refuses (EAGAIN) rather than waits: then this step is lost.
  if (!c.fd || ::connect(c.fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    c.fd.reset();
    return false;
  }
  return true;
}

void send_bytes(FuzzClient& c, const uint8_t* data, size_t n) {
  (void)::send(c.fd.get(), data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void read_answers(FuzzClient& c) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
    c.in.append(buf, static_cast<size_t>(n));
  }
  for (size_t nl; (nl = c.in.find('\n')) != std::string::npos; c.in.erase(0, nl + 1)) {
    const Json r = Json::parse(std::string_view(c.in).substr(0, nl), nullptr, false);
    check(!r.is_discarded() && r.is_object() && r.contains("ok") && r["ok"].is_boolean());
  }
  check(c.in.size() <= kMaxAnswer);  // a line longer than any answer: framing lost
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Server& s = server();
  std::array<FuzzClient, kClients> clients;
  size_t i = 0;
  while (i < size) {
    const uint8_t rec = data[i++];
    FuzzClient& c = clients[(rec & 0x1f) % kClients];
    const unsigned what = rec >> 5;
    if (!c.fd && what <= 5 && !connect_client(c, s.path())) continue;
    switch (what) {
      case 0:
      case 1:
      case 2: {
        if (size - i < 2) {
          i = size;
          break;
        }
        const size_t n = std::min<size_t>(data[i] | (size_t{data[i + 1]} << 8), size - i - 2);
        send_bytes(c, data + i + 2, n);
        i += 2 + n;
        break;
      }
      case 3: {
        if (size - i < 2) {
          i = size;
          break;
        }
        const std::string run(size_t{data[i + 1]} * 1024 + 1, static_cast<char>(data[i]));
        send_bytes(c, reinterpret_cast<const uint8_t*>(run.data()), run.size());
        i += 2;
        break;
      }
      case 4:
        read_answers(c);
        break;
      case 5:
        ::shutdown(c.fd.get(), SHUT_WR);
        break;
      case 6:
        c.fd.reset();
        break;
      case 7:
        for (unsigned k = i < size ? data[i++] : 1; k > 0; --k) serve();
        break;
    }
    serve();
  }
  // Everyone leaves: the server must notice each (EOF, EPIPE) and keep nothing.
  for (FuzzClient& c : clients) c.fd.reset();
  // (At least two rounds: one to accept connections still in the backlog, one to see them gone.)
  for (int round = 0; round < 64 && (round < 2 || s.clients() > 0 || s.buffered_bytes() > 0); ++round) serve();
  check(s.clients() == 0 && s.buffered_bytes() == 0);
  return 0;
}
