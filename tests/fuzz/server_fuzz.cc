// libFuzzer target for the server's request handling (src/server/api.h): any body must parse into
// a request or throw ApiError (answered as a 4xx), never crash, hang or throw anything else.
// Seeds: any OpenAI request body, e.g. {"messages":[{"role":"user","content":"hi"}],"stream":true}.
#include <cstdint>
#include <string>

#include "server/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace trinity::server;
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (const bool chat : {true, false}) {
    try {
      const json value = ParseBody(body);
      CompletionRequest request = ParseCompletionRequest(value, chat);
      request.sampling = ParseSampling(value, request.sampling);
      // What the handlers build from a parsed request must serialise.
      const Usage usage{3, 2, 1.0, 2.0};
      volatile size_t n = SseEvent(ChunkJson(request, "id", 0, "m", json("x"), "")).size() +
                          CompletionResponse(request, "id", 0, "m", "text", "stop", usage).dump().size();
      (void)n;
    } catch (const ApiError& e) {
      if (e.status < 400 || e.status >= 500 || e.ToJson().dump().empty()) __builtin_trap();
    }
  }
  return 0;
}
