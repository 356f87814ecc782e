#include "hub/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <mutex>

namespace trinity::hub {
namespace {

constexpr size_t kMaxErrorBodyBytes = 64 * 1024;
constexpr size_t kMaxBufferedBodyBytes = 64 * 1024 * 1024;

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  HttpResponse response;
  BodyHandler* handler = nullptr;
  bool begun = false;
  const std::atomic<bool>* cancel = nullptr;
  std::exception_ptr exception;  // thrown by a BodyHandler callback
};

bool IsSuccess(long status) { return status >= 200 && status < 300; }

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t n = size * count;
  std::string line(data, n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a redirect or 100 Continue)
    transfer->response.headers.clear();
    const size_t space = line.find(' ');
    transfer->response.status = space == std::string::npos ? 0 : std::atol(line.c_str() + space + 1);
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return n;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  size_t value_start = colon + 1;
  while (value_start < line.size() && (line[value_start] == ' ' || line[value_start] == '\t')) {
    ++value_start;
  }
  transfer->response.headers[name] = line.substr(value_start);
  return n;
}

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  HttpResponse& response = transfer->response;
  const size_t n = size * count;
  if (!IsSuccess(response.status) || transfer->handler == nullptr) {
    const size_t cap = IsSuccess(response.status) ? kMaxBufferedBodyBytes : kMaxErrorBodyBytes;
    response.body.append(data, std::min(n, cap - std::min(cap, response.body.size())));
    if (IsSuccess(response.status)) response.body_bytes += n;
    return n;
  }
  // Exceptions must not cross libcurl's C frames: keep one and rethrow it after the transfer.
  try {
    if (!transfer->begun) {
      transfer->begun = true;
      if (transfer->handler->on_begin && !transfer->handler->on_begin(response)) {
        response.handler_stopped = true;
        return 0;  // CURLE_WRITE_ERROR ends the transfer
      }
    }
    if (!transfer->handler->on_data(data, n)) {
      response.handler_stopped = true;
      return 0;
    }
  } catch (...) {
    transfer->exception = std::current_exception();
    response.handler_stopped = true;
    return 0;
  }
  response.body_bytes += n;
  return n;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* transfer = static_cast<Transfer*>(user);
  return transfer->cancel != nullptr && transfer->cancel->load() ? 1 : 0;
}

bool IsTransient(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

HttpResponse Perform(const std::string& url, const std::vector<std::string>& headers, bool head,
                     const std::string& range, BodyHandler* handler, const HttpSettings& settings) {
  GlobalInitOnce();
  Transfer transfer;
  transfer.handler = handler;
  transfer.cancel = settings.cancel;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    transfer.response.transport_error = "libcurl could not start a transfer";
    return transfer.response;
  }
  curl_slist* header_list = nullptr;
  for (const std::string& header : headers) header_list = curl_slist_append(header_list, header.c_str());

  char error_buffer[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, header_list);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, settings.user_agent.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, settings.connect_timeout_s);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer);
  if (head) {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, settings.head_timeout_s);
  } else {
    // The Authorization header is dropped when a redirect leaves the host (libcurl's default, as
    // in the requests library the official client uses): the CDN never sees the token.
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, settings.stall_timeout_s);
    if (!range.empty()) curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
  }

  const CURLcode code = curl_easy_perform(curl);
  HttpResponse& response = transfer.response;
  char* effective_url = nullptr;
  if (curl_easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &effective_url) == CURLE_OK && effective_url) {
    response.effective_url = effective_url;
  }
  long status = 0;
  if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status != 0) {
    response.status = status;
  }
  if (code != CURLE_OK) {
    response.cancelled = code == CURLE_ABORTED_BY_CALLBACK;
    response.transient = IsTransient(code);
    response.transport_error = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
  }
  curl_slist_free_all(header_list);
  curl_easy_cleanup(curl);
  if (transfer.exception) std::rethrow_exception(transfer.exception);
  if (code == CURLE_OK && handler != nullptr && IsSuccess(response.status) && !transfer.begun &&
      handler->on_begin && !handler->on_begin(response)) {
    response.handler_stopped = true;  // an empty body: on_begin still gets its say
  }
  return response;
}

}  // namespace

std::string HttpResponse::Header(const std::string& name) const {
  const auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

HttpResponse HttpHead(const std::string& url, const std::vector<std::string>& headers,
                      const HttpSettings& settings) {
  return Perform(url, headers, /*head=*/true, "", nullptr, settings);
}

HttpResponse HttpGet(const std::string& url, const std::vector<std::string>& headers,
                     const std::string& range, BodyHandler* handler, const HttpSettings& settings) {
  return Perform(url, headers, /*head=*/false, range, handler, settings);
}

std::string UrlQuote(const std::string& text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace trinity::hub
