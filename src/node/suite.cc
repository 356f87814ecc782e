#include "node/suite.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/common/error.h"

namespace trinity::node {

std::string DefaultSuitePath() { return std::string(TRINITY_DATA_DIR) + "/bench/seed_suite.json"; }

Suite LoadSuite(const std::string& path, const TaskRegistry* tasks) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot open benchmark suite {}", path);
  std::ostringstream text;
  text << in.rdbuf();
  return ParseSuite(text.str(), path, tasks);
}

Suite ParseSuite(std::string_view json_text, const std::string& origin, const TaskRegistry* tasks) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    Fail("{}: not valid JSON: {}", origin, e.what());
  }
  if (!doc.is_object() || !doc.contains("requests") || !doc["requests"].is_array()) {
    Fail("{}: expected an object with a \"requests\" array", origin);
  }
  Suite suite;
  if (doc.contains("name")) {
    if (!doc["name"].is_string()) Fail("{}: \"name\" must be a string", origin);
    suite.name = doc["name"].get<std::string>();
  }
  const nlohmann::json& requests = doc["requests"];
  if (requests.empty()) Fail("{}: \"requests\" is empty", origin);
  for (size_t i = 0; i < requests.size(); ++i) {
    const nlohmann::json& r = requests[i];
    const std::string where = fmt::format("{}: requests[{}]", origin, i);
    if (!r.is_object()) Fail("{}: must be an object", where);
    TaskRequest request;
    for (const auto& [key, value] : r.items()) {
      if (key == "task" || key == "input") {
        if (!value.is_string()) Fail("{}: \"{}\" must be a string", where, key);
        (key == "task" ? request.task : request.input) = value.get<std::string>();
      } else if (key == "max_tokens") {
        if (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > (1 << 20)) {
          Fail("{}: \"max_tokens\" must be a positive integer", where);
        }
        request.max_tokens = value.get<int32_t>();
      } else {
        Fail("{}: unknown key \"{}\" (expected task, input, max_tokens)", where, key);
      }
    }
    if (request.task.empty()) Fail("{}: missing \"task\"", where);
    if (request.input.empty()) Fail("{}: missing \"input\"", where);
    if (tasks != nullptr && tasks->Find(request.task) == nullptr) {
      Fail("{}: unknown task \"{}\" (known: {})", where, request.task, tasks->Names());
    }
    suite.requests.push_back(std::move(request));
  }
  return suite;
}

}  // namespace trinity::node
