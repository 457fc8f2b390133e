#include "cards/blk/card.hpp"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstring>

#include "base/log.hpp"

namespace azote::card_blk {
namespace {

constexpr uint64_t kTagSignal = 0;
constexpr uint64_t kTagStop = 1;
constexpr uint64_t kTagBackend = 2;  // + volume index

}  // namespace

Result<std::unique_ptr<Card>, CardError> Card::create(const CardOptions& options) {
  std::unique_ptr<Card> c(new Card());
  for (const VolumeOptions& vo : options.volumes) {
    auto v = Volume::open(vo, c->clock_);
    if (!v) return make_error(v.error().code == VolumeErrc::kHost ? CardErrc::kHost : CardErrc::kVolume,
                              v.error().message());
    Served s;
    s.volume = std::move(v).value();
    s.device = std::make_unique<BlkDevice>(*s.volume);
    c->served_.push_back(std::move(s));
  }
  for (Served& s : c->served_) {
    auto b = vhost_user::Backend::listen(s.volume->params().socket, *s.device);
    if (!b) return make_error(CardErrc::kHost, "socket=" + s.volume->params().socket + ": " + b.error().message());
    s.backend = std::move(b).value();
  }
  if (!options.metrics_path.empty()) {
    std::vector<MetricsSource> src;
    for (const Served& s : c->served_) src.push_back({s.volume->params().name, s.volume->params().socket, &s.volume->metrics()});
    auto m = MetricsServer::start(options.metrics_path, std::move(src));
    if (!m) return make_error(CardErrc::kHost, m.error().message());
    c->metrics_ = std::move(m).value();
  }

  c->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  c->stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  c->signal_fd_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!c->epoll_ || !c->stop_fd_ || !c->signal_fd_) return errno_error(CardErrc::kHost, "epoll/eventfd/signalfd");
  auto watch = [&](int fd, uint64_t tag) -> Result<void, CardError> {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    if (::epoll_ctl(c->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return errno_error(CardErrc::kHost, "epoll_ctl");
    return {};
  };
  AZOTE_TRYV(watch(c->signal_fd_.get(), kTagSignal));
  AZOTE_TRYV(watch(c->stop_fd_.get(), kTagStop));
  for (size_t i = 0; i < c->served_.size(); ++i) AZOTE_TRYV(watch(c->served_[i].backend->poll_fd(), kTagBackend + i));
  return c;
}

Card::~Card() {
  metrics_.reset();
  // Backends first (each stops its queues and removes its socket), then devices, then volumes.
  for (Served& s : served_) s.backend.reset();
  served_.clear();
}

void Card::request_stop() {
  const uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
}

int Card::run() {
  LOG_INFO("azote-card-blk: serving %zu volume(s)", served_.size());
  for (;;) {
    epoll_event ev[16];
    const int n = ::epoll_wait(epoll_.get(), ev, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("azote-card-blk: epoll_wait: %s", std::strerror(errno));
      return kExitOsErr;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = ev[i].data.u64;
      if (tag == kTagSignal) {
        signalfd_siginfo si{};
        if (::read(signal_fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si))
          LOG_INFO("azote-card-blk: %s: stopping", strsignal(static_cast<int>(si.ssi_signo)));
        return kExitOk;
      }
      if (tag == kTagStop) return kExitOk;
      const size_t idx = static_cast<size_t>(tag - kTagBackend);
      if (idx >= served_.size()) continue;
      if (auto r = served_[idx].backend->run_once(std::chrono::milliseconds(0)); !r)
        LOG_ERROR("volume %s: %s", served_[idx].volume->params().name.c_str(), r.error().message().c_str());
    }
  }
}

}  // namespace azote::card_blk
