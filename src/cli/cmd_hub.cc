// trinity pull [REPO [FILE]]: fetch a model from the Hugging Face hub into the shared hub cache.
// trinity models: list the GGUF files in that cache.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "cli/commands.h"
#include "hub/download.h"
#include "hub/hub_error.h"

namespace trinity::cli {
namespace {

// Ctrl-C during a download stops it cleanly (the partial file stays for a resume); a second
// Ctrl-C kills the process as usual.
std::atomic<bool> g_cancel{false};

extern "C" void OnInterrupt(int) {
  g_cancel.store(true);
  std::signal(SIGINT, SIG_DFL);
}

std::string RevisionLabel(const hub::CachedFile& file) {
  if (file.refs.empty()) return file.commit.substr(0, 10);
  std::string label;
  for (const std::string& ref : file.refs) label += (label.empty() ? "" : ",") + ref;
  return label;
}

bool IsGguf(const std::string& name) {
  return name.size() >= 5 && name.compare(name.size() - 5, 5, ".gguf") == 0;
}

}  // namespace

void RegisterPull(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "pull",
      "Download a model from the Hugging Face hub into its cache (HF_HUB_CACHE, HF_HOME; default "
      "~/.cache/huggingface/hub) and print its local path. Honours HF_ENDPOINT, HF_TOKEN and "
      "HF_HUB_OFFLINE; interrupted downloads resume.");
  struct Args {
    std::string repo{hub::kDefaultRepo};
    std::string file;
    std::string revision{hub::kDefaultRevision};
    bool force = false;
    bool quiet = false;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("repo", args->repo, "repository id, org/name")->capture_default_str();
  cmd->add_option("file", args->file,
                  fmt::format("file in the repository (default: {} for the default repository, "
                              "else the repository's only GGUF file)",
                              hub::kDefaultFile));
  cmd->add_option("--revision", args->revision, "branch, tag or commit hash")->capture_default_str();
  cmd->add_flag("--force", args->force, "download again even if the file is cached");
  cmd->add_flag("-q,--quiet", args->quiet, "no progress display or notes on stderr");
  cmd->add_flag("--json", args->json, "print the result as JSON instead of the bare path");
  cmd->callback([args] {
    const hub::HubConfig config = hub::HubConfig::FromEnvironment();
    hub::PullOptions options;
    options.repo_id = args->repo;
    options.revision = args->revision;
    options.force = args->force;
    options.http.cancel = &g_cancel;
    const bool chatty = !args->quiet;
    if (chatty) options.on_message = [](const std::string& note) { fmt::print(stderr, "{}\n", note); };
    std::unique_ptr<hub::ProgressSink> progress;
    if (chatty && !config.progress_disabled) {
      progress = hub::MakeStderrProgress();
      options.progress = progress.get();
    }
    if (!args->file.empty()) {
      options.filename = args->file;
    } else if (args->repo != hub::kDefaultRepo) {
      std::vector<std::string> files;
      if (config.offline) {  // choose among what is cached
        for (const hub::CachedFile& f : hub::ListCachedFiles(config.cache_dir)) {
          if (f.repo_id == args->repo && std::find(files.begin(), files.end(), f.filename) == files.end()) {
            files.push_back(f.filename);
          }
        }
      } else {
        files = hub::ListRepoFiles(config, args->repo, args->revision, options.http);
      }
      options.filename = hub::ChooseGgufFile(files, args->repo);
    }

    g_cancel.store(false);
    auto* previous = std::signal(SIGINT, OnInterrupt);
    hub::PullResult result;
    try {
      result = hub::Pull(config, options);
    } catch (...) {
      std::signal(SIGINT, previous);
      throw;
    }
    std::signal(SIGINT, previous);

    if (chatty) {
      std::string how = result.downloaded ? "downloaded" : (result.offline ? "cached (offline)" : "cached");
      if (result.resumed) how += ", resumed";
      if (result.downloaded) how += result.verified ? ", sha256 verified" : ", no sha256 to verify";
      fmt::print(stderr, "{}/{}: {} ({})\n", options.repo_id, options.filename, how,
                 hub::FormatBytes(result.size_bytes));
    }
    if (args->json) {
      const nlohmann::json j = {
          {"path", result.path.string()},    {"repo", options.repo_id},         {"file", options.filename},
          {"revision", options.revision},    {"commit", result.commit},         {"etag", result.etag},
          {"size_bytes", result.size_bytes}, {"downloaded", result.downloaded}, {"resumed", result.resumed},
          {"verified", result.verified},     {"offline", result.offline}};
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s\n", result.path.c_str());
    }
  });
}

void RegisterModels(CLI::App& app) {
  auto* cmd = app.add_subcommand("models", "List the GGUF models in the Hugging Face hub cache");
  auto json = std::make_shared<bool>(false);
  auto all = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "print JSON");
  cmd->add_flag("--all", *all, "list every cached file, not only .gguf");
  cmd->callback([json, all] {
    const hub::HubConfig config = hub::HubConfig::FromEnvironment();
    std::vector<hub::CachedFile> files;
    for (hub::CachedFile& file : hub::ListCachedFiles(config.cache_dir)) {
      if (*all || IsGguf(file.filename)) files.push_back(std::move(file));
    }
    const std::vector<hub::PartialDownload> partials = hub::ListPartialDownloads(config.cache_dir);
    if (*json) {
      nlohmann::json list = nlohmann::json::array();
      for (const hub::CachedFile& f : files) {
        list.push_back({{"repo", f.repo_id},
                        {"file", f.filename},
                        {"size_bytes", f.size_bytes},
                        {"path", f.path.string()},
                        {"commit", f.commit},
                        {"refs", f.refs}});
      }
      nlohmann::json partial_list = nlohmann::json::array();
      for (const hub::PartialDownload& p : partials) {
        partial_list.push_back(
            {{"repo", p.repo_id}, {"path", p.path.string()}, {"size_bytes", p.size_bytes}});
      }
      const nlohmann::json j = {
          {"cache_dir", config.cache_dir.string()}, {"files", list}, {"partial_downloads", partial_list}};
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    if (files.empty()) {
      fmt::print("no {}files in the hub cache {}; `trinity pull` fetches {}/{}\n", *all ? "" : "GGUF ",
                 config.cache_dir.string(), hub::kDefaultRepo, hub::kDefaultFile);
    } else {
      size_t repo_width = 4, file_width = 4, revision_width = 8;
      for (const hub::CachedFile& f : files) {
        repo_width = std::max(repo_width, f.repo_id.size());
        file_width = std::max(file_width, f.filename.size());
        revision_width = std::max(revision_width, RevisionLabel(f).size());
      }
      fmt::print("{:<{}}  {:<{}}  {:>9}  {:<{}}  {}\n", "REPO", repo_width, "FILE", file_width, "SIZE",
                 "REVISION", revision_width, "PATH");
      for (const hub::CachedFile& f : files) {
        fmt::print("{:<{}}  {:<{}}  {:>9}  {:<{}}  {}\n", f.repo_id, repo_width, f.filename, file_width,
                   hub::FormatBytes(f.size_bytes), RevisionLabel(f), revision_width, f.path.string());
      }
    }
    for (const hub::PartialDownload& p : partials) {
      fmt::print("partial download: {} ({}, {}); `trinity pull` resumes it\n", p.repo_id,
                 hub::FormatBytes(p.size_bytes), p.path.string());
    }
  });
}

}  // namespace trinity::cli
