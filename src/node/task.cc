#include "node/task.h"

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/common/error.h"

namespace trinity::node {

namespace {

// The seed report's tasks, templates and limits, verbatim (trinity_node_scale_report.md).
// Sentiment answers with a label; topic with one word; the others with text. (A function-local
// static, so a registry built during static initialisation elsewhere still sees it.)
const std::vector<TaskSpec>& BuiltinTasks() {
  static const std::vector<TaskSpec> tasks = {
    {"generation", "Generation", "Continue this text:\n{input}\n\nContinuation:", 100, {}, {}, AnswerKind::kGenerate},
    {"qa", "QA", "Answer concisely:\n{input}\n\nAnswer:", 50, {}, {}, AnswerKind::kGenerate},
    {"sentiment", "Sentiment", "Analyze sentiment (positive/negative/neutral):\n{input}\n\nSentiment:", 20, {},
     {"positive", "negative", "neutral"}, AnswerKind::kLabel},
    {"topic", "Topic", "Main topic in one word:\n{input}\n\nTopic:", 10, {}, {}, AnswerKind::kFirstWord},
    {"summarize", "Summarize", "Summarize in one sentence:\n{input}\n\nSummary:", 50, {}, {}, AnswerKind::kGenerate},
  };
  return tasks;
}

constexpr std::string_view kPlaceholder = "{input}";
constexpr int32_t kMaxTokensLimit = 1 << 20;

std::string Capitalised(std::string_view name) {
  std::string out(name);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

AnswerKind ParseAnswerKind(std::string_view text, const std::string& where) {
  for (AnswerKind k : {AnswerKind::kGenerate, AnswerKind::kLabel, AnswerKind::kFirstWord}) {
    if (text == AnswerKindName(k)) return k;
  }
  Fail("{}: \"answer\" must be \"generate\", \"label\" or \"first_word\", got \"{}\"", where, text);
}

std::vector<std::string> StringArray(const nlohmann::json& j, const char* key, const std::string& where) {
  std::vector<std::string> out;
  if (!j.is_array()) Fail("{}: \"{}\" must be an array of strings", where, key);
  for (const auto& item : j) {
    if (!item.is_string()) Fail("{}: \"{}\" must be an array of strings, found {}", where, key, item.dump());
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace

const char* AnswerKindName(AnswerKind kind) {
  switch (kind) {
    case AnswerKind::kGenerate:
      return "generate";
    case AnswerKind::kLabel:
      return "label";
    case AnswerKind::kFirstWord:
      return "first_word";
  }
  return "generate";
}

std::string FillTemplate(const TaskSpec& spec, std::string_view input) {
  std::string out;
  std::string_view rest = spec.prompt_template;
  for (size_t at; (at = rest.find(kPlaceholder)) != std::string_view::npos;) {
    out += rest.substr(0, at);
    out += input;
    rest.remove_prefix(at + kPlaceholder.size());
  }
  out += rest;
  return out;
}

TaskRegistry TaskRegistry::Builtin() {
  TaskRegistry registry;
  for (const TaskSpec& spec : BuiltinTasks()) registry.Add(spec);
  return registry;
}

void TaskRegistry::Add(TaskSpec spec) {
  const std::string where = fmt::format("task \"{}\"", spec.name);
  if (spec.name.empty()) Fail("a task needs a name");
  for (char c : spec.name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      Fail("{}: names use lower-case letters, digits, '_' and '-' only", where);
    }
  }
  if (spec.prompt_template.find(kPlaceholder) == std::string::npos) {
    Fail("{}: the template must contain {{input}}", where);
  }
  if (spec.default_max_tokens < 1 || spec.default_max_tokens > kMaxTokensLimit) {
    Fail("{}: max_tokens must be between 1 and {}, got {}", where, kMaxTokensLimit, spec.default_max_tokens);
  }
  for (const std::string& s : spec.stop) {
    if (s.empty()) Fail("{}: stop strings must not be empty", where);
  }
  if (spec.answer == AnswerKind::kLabel) {
    if (spec.labels.size() < 2) Fail("{}: a label task needs at least two labels", where);
    std::set<std::string> seen;
    for (const std::string& label : spec.labels) {
      if (label.empty() || label.find_first_not_of(" \t\n") == std::string::npos) {
        Fail("{}: labels must not be empty", where);
      }
      if (!seen.insert(label).second) Fail("{}: label \"{}\" is declared twice", where, label);
    }
  } else if (!spec.labels.empty()) {
    Fail("{}: labels are only used with \"answer\": \"label\"", where);
  }
  if (spec.display_name.empty()) spec.display_name = Capitalised(spec.name);
  for (TaskSpec& existing : tasks_) {
    if (existing.name == spec.name) {
      existing = std::move(spec);
      return;
    }
  }
  tasks_.push_back(std::move(spec));
}

void TaskRegistry::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot open task config {}", path);
  std::ostringstream text;
  text << in.rdbuf();
  LoadJson(text.str(), path);
}

void TaskRegistry::LoadJson(std::string_view text, const std::string& origin) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    Fail("{}: not valid JSON: {}", origin, e.what());
  }
  if (!doc.is_object() || !doc.contains("tasks")) Fail("{}: expected an object with a \"tasks\" array", origin);
  for (const auto& [key, value] : doc.items()) {
    if (key != "tasks") Fail("{}: unknown key \"{}\" (expected \"tasks\")", origin, key);
  }
  const nlohmann::json& tasks = doc["tasks"];
  if (!tasks.is_array() || tasks.empty()) Fail("{}: \"tasks\" must be a non-empty array", origin);
  // Validate every declaration before adding any, so a bad file changes nothing.
  std::vector<TaskSpec> specs;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const nlohmann::json& t = tasks[i];
    std::string where = fmt::format("{}: tasks[{}]", origin, i);
    if (!t.is_object()) Fail("{}: must be an object", where);
    if (t.contains("name") && t["name"].is_string()) {
      where += fmt::format(" (\"{}\")", t["name"].get<std::string>());
    }
    TaskSpec spec;
    bool has_answer = false;
    for (const auto& [key, value] : t.items()) {
      if (key == "name" || key == "display_name" || key == "template") {
        if (!value.is_string()) Fail("{}: \"{}\" must be a string", where, key);
        const std::string s = value.get<std::string>();
        (key == "name" ? spec.name : key == "display_name" ? spec.display_name : spec.prompt_template) = s;
      } else if (key == "max_tokens") {
        if (!value.is_number_integer()) Fail("{}: \"max_tokens\" must be an integer", where);
        const int64_t n = value.get<int64_t>();
        if (n < 1 || n > kMaxTokensLimit) {
          Fail("{}: \"max_tokens\" must be between 1 and {}, got {}", where, kMaxTokensLimit, n);
        }
        spec.default_max_tokens = static_cast<int32_t>(n);
      } else if (key == "stop") {
        spec.stop = StringArray(value, "stop", where);
      } else if (key == "labels") {
        spec.labels = StringArray(value, "labels", where);
      } else if (key == "answer") {
        if (!value.is_string()) Fail("{}: \"answer\" must be a string", where);
        spec.answer = ParseAnswerKind(value.get<std::string>(), where);
        has_answer = true;
      } else {
        Fail("{}: unknown key \"{}\" (expected name, display_name, template, max_tokens, stop, labels, answer)",
             where, key);
      }
    }
    for (const char* required : {"name", "template", "max_tokens"}) {
      if (!t.contains(required)) Fail("{}: missing \"{}\"", where, required);
    }
    if (!has_answer && !spec.labels.empty()) spec.answer = AnswerKind::kLabel;
    try {
      TaskRegistry scratch;  // validation only
      scratch.Add(spec);
    } catch (const Error& e) {
      Fail("{}: {}", origin, e.what());
    }
    for (const TaskSpec& earlier : specs) {
      if (earlier.name == spec.name) Fail("{}: task \"{}\" is declared twice", origin, spec.name);
    }
    specs.push_back(std::move(spec));
  }
  for (TaskSpec& spec : specs) Add(std::move(spec));
}

const TaskSpec* TaskRegistry::Find(std::string_view name) const {
  for (const TaskSpec& spec : tasks_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const TaskSpec& TaskRegistry::Get(std::string_view name) const {
  const TaskSpec* spec = Find(name);
  if (spec == nullptr) Fail("unknown task \"{}\" (known: {})", name, Names());
  return *spec;
}

std::string TaskRegistry::Names() const {
  std::string out;
  for (const TaskSpec& spec : tasks_) {
    if (!out.empty()) out += ", ";
    out += spec.name;
  }
  return out;
}

}  // namespace trinity::node
