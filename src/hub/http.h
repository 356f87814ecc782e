// A thin layer over libcurl: one HEAD that does not follow redirects (the hub's metadata lives on
// the first response) and one streaming GET that does (the hub redirects LFS files to a CDN).
// Transport failures are returned, not thrown, so the caller can decide to retry or resume.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace trinity::hub {

struct HttpSettings {
  long connect_timeout_s = 10;
  long head_timeout_s = 30;   // whole HEAD request
  long stall_timeout_s = 30;  // a GET receiving nothing for this long is cut (and resumed)
  std::string user_agent = "trinity/0.1.0";
  const std::atomic<bool>* cancel = nullptr;  // set to true to stop a transfer
};

struct HttpResponse {
  long status = 0;                             // 0: no HTTP response at all
  std::map<std::string, std::string> headers;  // of the last response, names in lowercase
  std::string body;                            // error bodies (first 64 KiB) or buffered GETs
  std::string effective_url;                   // after redirects
  std::string transport_error;                 // empty when the transfer completed
  bool transient = false;        // the transport error may go away on retry (reset, cut, timeout)
  bool cancelled = false;        // HttpSettings::cancel was set
  bool handler_stopped = false;  // a BodyHandler callback returned false
  uint64_t body_bytes = 0;       // bytes of a 2xx body received

  // The header's value, or "" when absent. `name` must be lowercase.
  std::string Header(const std::string& name) const;
};

// Receives the body of a 2xx response. on_begin runs once, before the first byte (or at the end
// for an empty body), and sees the status and headers; either callback returns false to stop.
struct BodyHandler {
  std::function<bool(const HttpResponse& response)> on_begin;
  std::function<bool(const char* data, size_t size_bytes)> on_data;
};

// HEAD without following redirects. `headers` are "Name: value" lines.
HttpResponse HttpHead(const std::string& url, const std::vector<std::string>& headers,
                      const HttpSettings& settings);

// GET following up to 10 redirects. `range` is a byte range like "1000-" or "" for none. With a
// null handler, a 2xx body is kept in response.body.
HttpResponse HttpGet(const std::string& url, const std::vector<std::string>& headers,
                     const std::string& range, BodyHandler* handler, const HttpSettings& settings);

// Percent-encodes everything but unreserved characters, and '/' when keep_slash.
std::string UrlQuote(const std::string& text, bool keep_slash);

}  // namespace trinity::hub
