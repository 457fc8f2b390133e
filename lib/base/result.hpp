// Result<T, E>: a small expected-like type (C++20 has no std::expected yet).
// Every fallible function in azote returns one; no exceptions on vCPU or card data paths.
#pragma once

#include <cassert>
#include <cstdlib>
#include <type_traits>
#include <utility>
#include <variant>

namespace azote {

template <class E>
struct Unexpected {
  E error;
};
template <class E>
Unexpected(E) -> Unexpected<E>;

template <class T, class E>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  template <class G>
  Result(Unexpected<G> u) : v_(std::in_place_index<1>, E(std::move(u.error))) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { check(); return std::get<0>(v_); }
  const T& value() const& { check(); return std::get<0>(v_); }
  T&& value() && { check(); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const E& error() const& { return std::get<1>(v_); }
  E&& error() && { return std::get<1>(std::move(v_)); }

 private:
  void check() const {
    if (!ok()) std::abort();  // a bug in the caller: always fatal
  }
  std::variant<T, E> v_;
};

// Result<void, E>
template <class E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  template <class G>
  Result(Unexpected<G> u) : e_(E(std::move(u.error))), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const E& error() const& { return e_; }
  E&& error() && { return std::move(e_); }

 private:
  E e_{};
  bool ok_ = true;
};

}  // namespace azote

// Propagate an error: AZOTE_TRY(x, expr) declares x from expr's value or returns its error.
#define AZOTE_CONCAT_(a, b) a##b
#define AZOTE_CONCAT(a, b) AZOTE_CONCAT_(a, b)
#define AZOTE_TRY(var, expr)                                   \
  auto AZOTE_CONCAT(_r_, __LINE__) = (expr);                   \
  if (!AZOTE_CONCAT(_r_, __LINE__).ok())                       \
    return ::azote::Unexpected{std::move(AZOTE_CONCAT(_r_, __LINE__)).error()}; \
  auto var = std::move(AZOTE_CONCAT(_r_, __LINE__)).value()
#define AZOTE_TRYV(expr)                                       \
  do {                                                         \
    auto _rv = (expr);                                         \
    if (!_rv.ok()) return ::azote::Unexpected{std::move(_rv).error()}; \
  } while (0)
