// The engine's one exception type. Every error a user can cause (bad file, bad argument) is
// reported by throwing trinity::Error with a message that names the file, key or tensor involved
// and what was expected. Front ends (CLI, C API, server) catch it and print the message.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace trinity {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws trinity::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void Fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace trinity
