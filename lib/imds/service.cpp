#include "imds/service.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <microhttpd.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "runtime/runtime.hpp"
#include "imds/slots.hpp"

namespace azote::imds {
namespace {

template <size_t N>
struct AtomicArray {
  std::array<std::atomic<uint64_t>, N> a{};
  void inc(size_t i) { a[i].fetch_add(1, std::memory_order_relaxed); }
  std::array<uint64_t, N> load() const {
    std::array<uint64_t, N> out{};
    for (size_t i = 0; i < N; ++i) out[i] = a[i].load(std::memory_order_relaxed);
    return out;
  }
};

size_t status_index(int status) {
  for (size_t i = 0; i < kCountedStatuses.size(); ++i) {
    if (kCountedStatuses[i] == status) return i;
  }
  return kCountedStatuses.size();
}

// Runs on a thread of its own, which it moves into a new network namespace.
Result<NamespaceFds, ImdsError> set_up_namespace(const std::string& tun_name) {
  if (::unshare(CLONE_NEWNET) != 0) return errno_error(ImdsErrc::kNamespace, "unshare(CLONE_NEWNET)");
  return prepare_namespace(tun_name);
}

struct ConnectionState {
  size_t body = 0;
};

}  // namespace

uint64_t Counters::status(int code) const { return responses[status_index(code)]; }

struct Service::Impl {
  Options options;
  TokenService tokens;
  SlotTable slots;
  UniqueFd tun;
  UniqueFd stop_event;
  MHD_Daemon* daemon = nullptr;
  std::thread reader;

  std::mutex output_mu;
  Output output;

  AtomicArray<kCountedStatuses.size() + 1> responses;
  std::atomic<uint64_t> tokens_issued{0};
  AtomicArray<kRefusalCount> refusals;
  std::atomic<uint64_t> packets_in{0};
  std::atomic<uint64_t> packets_out{0};
  AtomicArray<kDropCount> dropped_in;
  AtomicArray<kDropCount> dropped_out;
  std::atomic<uint64_t> ttl_rewritten{0};
  std::atomic<uint64_t> connections{0};
  log::RateLimit log_limit{10, std::chrono::seconds(10)};

  Impl(Options o, TokenService t)
      : options(std::move(o)), tokens(std::move(t)), slots(options.max_slots, options.slot_quarantine) {}

  TimePoint now() const { return options.clock ? options.clock() : Clock::now(); }

  std::shared_ptr<const SlotTable::Entry> client_slot(const sockaddr* addr) const {
    if (addr == nullptr || addr->sa_family != AF_INET) return nullptr;
    sockaddr_in sin{};
    std::memcpy(&sin, addr, sizeof sin);
    const auto slot = slot_of(net::Ipv4Address::from_u32(ntohl(sin.sin_addr.s_addr)));
    return slot ? slots.get(*slot) : nullptr;
  }

  MHD_Result answer(MHD_Connection* c, const char* url, const char* method) {
    const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const auto entry = client_slot(info ? info->client_addr : nullptr);
    if (!entry) {  // the slot was removed while the connection was open
      refusals.inc(static_cast<size_t>(Refusal::kUnknownClient));
      return MHD_NO;
    }
    Request req;
    req.method = method;
    req.path = url;
    MHD_get_connection_values(
        c, MHD_HEADER_KIND,
        [](void* cls, MHD_ValueKind, const char* key, const char* value) -> MHD_Result {
          static_cast<Request*>(cls)->headers.emplace_back(key, value ? value : "");
          return MHD_YES;
        },
        &req);
    const Response r = handle(req, SlotView{entry->slot, entry->incarnation, entry->meta}, tokens, now());
    return queue(c, r);
  }

  MHD_Result queue(MHD_Connection* c, const Response& r) {
    responses.inc(status_index(r.status));
    if (r.refusal != Refusal::kNone) refusals.inc(static_cast<size_t>(r.refusal));
    if (r.token_issued) tokens_issued.fetch_add(1, std::memory_order_relaxed);
    MHD_Response* resp =
        MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
    if (resp == nullptr) return MHD_NO;
    bool ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str()) == MHD_YES;
    for (const auto& [k, v] : r.headers) ok = ok && MHD_add_response_header(resp, k.c_str(), v.c_str()) == MHD_YES;
    // As EC2: one request per connection.
    ok = ok && MHD_add_response_header(resp, MHD_HTTP_HEADER_SERVER, "EC2ws") == MHD_YES;
    ok = ok && MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "none") == MHD_YES;
    ok = ok && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") == MHD_YES;
    const MHD_Result q = ok ? MHD_queue_response(c, static_cast<unsigned>(r.status), resp) : MHD_NO;
    MHD_destroy_response(resp);
    return q;
  }

  static MHD_Result on_access(void* cls, MHD_Connection* c, const char* url, const char* method, const char*,
                              const char*, size_t* upload_size, void** con_cls) {
    auto* self = static_cast<Impl*>(cls);
    if (*con_cls == nullptr) {  // headers are in; the body (if any) follows
      *con_cls = new (std::nothrow) ConnectionState{};
      return *con_cls != nullptr ? MHD_YES : MHD_NO;
    }
    auto* state = static_cast<ConnectionState*>(*con_cls);
    if (*upload_size != 0) {  // ignored, and bounded
      state->body += *upload_size;
      *upload_size = 0;
      if (state->body > kMaxRequestBody) {
        self->refusals.inc(static_cast<size_t>(Refusal::kBodyTooLarge));
        return MHD_NO;  // closes the connection
      }
      return MHD_YES;
    }
    return self->answer(c, url, method);
  }

  static void on_completed(void*, MHD_Connection*, void** con_cls, MHD_RequestTerminationCode) {
    delete static_cast<ConnectionState*>(*con_cls);
    *con_cls = nullptr;
  }

  static MHD_Result on_accept(void* cls, const sockaddr* addr, socklen_t) {
    auto* self = static_cast<Impl*>(cls);
    if (!self->client_slot(addr)) {
      self->refusals.inc(static_cast<size_t>(Refusal::kUnknownClient));
      return MHD_NO;
    }
    self->connections.fetch_add(1, std::memory_order_relaxed);
    return MHD_YES;
  }

  __attribute__((format(printf, 2, 0))) static void on_log(void* cls, const char* fmt, va_list ap) {
    auto* self = static_cast<Impl*>(cls);
    if (!self->log_limit.allow()) return;
    char line[256];
    std::vsnprintf(line, sizeof line, fmt, ap);
    const size_t n = std::strlen(line);
    if (n > 0 && line[n - 1] == '\n') line[n - 1] = '\0';
    LOG_WARN("imds: libmicrohttpd: %s", line);
  }

  Result<void, ImdsError> start_http(UniqueFd listen) {
    const int fd = listen.release();
    daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, &Impl::on_accept, this,
        &Impl::on_access, this, MHD_OPTION_EXTERNAL_LOGGER, &Impl::on_log, this,  // first, as MHD asks
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        options.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, options.max_connections_per_slot,
        MHD_OPTION_CONNECTION_TIMEOUT, options.connection_timeout_seconds, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        options.connection_memory, MHD_OPTION_NOTIFY_COMPLETED, &Impl::on_completed, this,
        MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
    if (daemon == nullptr) {
      ::close(fd);
      return make_error(ImdsErrc::kHttp, "MHD_start_daemon on 169.254.169.254:80");
    }
    return {};
  }

  void read_loop() {
    if (!runtime::enter_thread_class("imds", "imds-tun")) return;
    std::vector<uint8_t> buf(65536);
    pollfd fds[2] = {{tun.get(), POLLIN, 0}, {stop_event.get(), POLLIN, 0}};
    for (;;) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        LOG_ERROR("imds: poll on the TUN: %s; the reader stops", std::strerror(errno));
        return;
      }
      if (fds[1].revents != 0) return;
      for (int i = 0; i < 256; ++i) {
        const ssize_t n = ::read(tun.get(), buf.data(), buf.size());
        if (n < 0) {
          if (errno != EAGAIN && errno != EINTR && log_limit.allow()) {
            LOG_WARN("imds: read from the TUN: %s", std::strerror(errno));
          }
          break;
        }
        from_kernel(std::span<uint8_t>(buf.data(), static_cast<size_t>(n)));
      }
    }
  }

  void from_kernel(std::span<uint8_t> pkt) {
    auto out = nat_outbound_parse(pkt);
    if (!out.ok()) {
      dropped_out.inc(static_cast<size_t>(out.error()));
      return;
    }
    const auto entry = slots.get(out->slot);
    if (!entry) {
      dropped_out.inc(static_cast<size_t>(Drop::kNoSlot));
      return;
    }
    auto ipv4 = pkt.first(out->length);
    if (nat_outbound_rewrite(ipv4, entry->meta.eni)) ttl_rewritten.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(output_mu);
    if (!output) {
      dropped_out.inc(static_cast<size_t>(Drop::kNoOutput));
      return;
    }
    output(out->slot, ipv4);
    packets_out.fetch_add(1, std::memory_order_relaxed);
  }

  void stop() {
    if (daemon != nullptr) {
      MHD_stop_daemon(daemon);  // closes the listening socket
      daemon = nullptr;
    }
    if (reader.joinable()) {
      const uint64_t one = 1;
      if (::write(stop_event.get(), &one, sizeof one) < 0) LOG_ERROR("imds: eventfd: %s", std::strerror(errno));
      reader.join();
    }
  }
};

namespace {

Result<void, ImdsError> check(const Options& options) {
  if (options.max_slots == 0 || options.max_slots > kMaxSlots) {
    return make_error(ImdsErrc::kBadOptions, "max_slots " + std::to_string(options.max_slots));
  }
  if (options.max_connections == 0 || options.max_connections_per_slot == 0 || options.connection_timeout_seconds == 0 ||
      options.connection_memory < 4096 || options.tun_name.empty() || options.tun_name.size() >= IFNAMSIZ ||
      options.slot_quarantine.count() < 0) {
    return make_error(ImdsErrc::kBadOptions, "connection limits, timeout, memory (>= 4096), quarantine or TUN name");
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Service>, ImdsError> Service::start(Options options) {
  AZOTE_TRYV(check(options));
  AZOTE_TRY(fds, private_namespace(options.tun_name));
  return start(std::move(options), std::move(fds));
}

Result<NamespaceFds, ImdsError> Service::private_namespace(const std::string& tun_name) {
  std::optional<Result<NamespaceFds, ImdsError>> setup;
  try {
    // Only this thread enters the new namespace; it ends once the descriptors exist.
    std::thread t([&] { setup.emplace(set_up_namespace(tun_name)); });
    t.join();
  } catch (const std::system_error& e) {
    return make_error(ImdsErrc::kThread, std::string("namespace thread: ") + e.what());
  }
  return std::move(*setup);
}

Result<std::unique_ptr<Service>, ImdsError> Service::start(Options options, NamespaceFds fds) {
  AZOTE_TRYV(check(options));
  if (!fds.tun || !fds.listen) return make_error(ImdsErrc::kBadOptions, "no TUN or listening socket");
  AZOTE_TRY(tokens, TokenService::create());
  auto impl = std::make_unique<Impl>(std::move(options), std::move(tokens));
  impl->tun = std::move(fds.tun);
  impl->stop_event.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->stop_event) return errno_error(ImdsErrc::kThread, "eventfd");
  AZOTE_TRYV(impl->start_http(std::move(fds.listen)));
  try {
    impl->reader = std::thread([p = impl.get()] { p->read_loop(); });
  } catch (const std::system_error& e) {
    impl->stop();
    return make_error(ImdsErrc::kThread, std::string("TUN reader thread: ") + e.what());
  }
  LOG_INFO("imds: serving 169.254.169.254:80 in a private network namespace (%u slots)", impl->options.max_slots);
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

Service::Service(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Service::~Service() { impl_->stop(); }

Result<uint32_t, ImdsError> Service::add(const InstanceMetadata& md) { return impl_->slots.add(md, impl_->now()); }

Result<void, ImdsError> Service::update(uint32_t slot, const InstanceMetadata& md) {
  return impl_->slots.update(slot, md);
}

Result<void, ImdsError> Service::remove(uint32_t slot) { return impl_->slots.remove(slot, impl_->now()); }

void Service::set_output(Output out) {
  std::lock_guard lock(impl_->output_mu);
  impl_->output = std::move(out);
}

Result<void, Drop> Service::inject(uint32_t slot, std::span<const uint8_t> ipv4) {
  Impl& s = *impl_;
  auto fail = [&s](Drop d) -> Result<void, Drop> {
    s.dropped_in.inc(static_cast<size_t>(d));
    return Unexpected{d};
  };
  const auto entry = s.slots.get(slot);
  if (!entry) return fail(Drop::kNoSlot);
  std::array<uint8_t, kMtu> buf;
  auto n = nat_inbound(ipv4, buf, entry->meta.eni, alias_of(slot));
  if (!n.ok()) return fail(n.error());
  if (::write(s.tun.get(), buf.data(), *n) < 0) {
    if (errno == EAGAIN || errno == ENOBUFS || errno == ENOMEM) return fail(Drop::kQueueFull);
    if (s.log_limit.allow()) LOG_WARN("imds: write to the TUN: %s", std::strerror(errno));
    return fail(Drop::kIoError);
  }
  s.packets_in.fetch_add(1, std::memory_order_relaxed);
  return {};
}

Counters Service::counters() const {
  const Impl& s = *impl_;
  Counters c;
  c.responses = s.responses.load();
  c.tokens_issued = s.tokens_issued.load(std::memory_order_relaxed);
  c.refusals = s.refusals.load();
  c.packets_in = s.packets_in.load(std::memory_order_relaxed);
  c.packets_out = s.packets_out.load(std::memory_order_relaxed);
  c.dropped_in = s.dropped_in.load();
  c.dropped_out = s.dropped_out.load();
  c.ttl_rewritten = s.ttl_rewritten.load(std::memory_order_relaxed);
  c.connections = s.connections.load(std::memory_order_relaxed);
  return c;
}

}  // namespace azote::imds
