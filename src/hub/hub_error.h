// The hub library's one exception type. The message is complete enough to print as is (it names
// the URL, repository, file or cache path involved and what to do); the kind lets callers and
// tests tell failures apart without parsing text.
#pragma once

#include <stdexcept>
#include <string>

namespace trinity::hub {

enum class ErrorKind {
  kInvalidArgument,  // malformed repository id, file name or revision
  kUnauthorized,     // HTTP 401: missing or rejected token, or a private repository
  kForbidden,        // HTTP 403: gated repository, or a token without access
  kNotFound,         // HTTP 404: repository, revision or file does not exist
  kHttp,             // any other unexpected HTTP status
  kNetwork,          // connection failed, timed out or was cut (the partial file is kept)
  kIntegrity,        // size or SHA-256 mismatch (the bad file is deleted)
  kOffline,          // HF_HUB_OFFLINE is set and the file is not in the cache
  kIo,               // local file system error
  kCancelled,        // the caller asked to stop (the partial file is kept)
};

class HubError : public std::runtime_error {
 public:
  HubError(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace trinity::hub
