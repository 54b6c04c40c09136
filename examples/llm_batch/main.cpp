// llm_batch: sends an OpenAI Batch-format JSONL file of LLM requests as fast as
// the quota allows, without 429s, and writes one output line per input line.
// Parses the flags and wires the parts; the parts live in batch.hpp.
#include "batch.hpp"

#include "../common/flags.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

std::atomic<bool> stop_requested{false};

/// First SIGINT/SIGTERM: finish what is in flight, send nothing new. The
/// handler is reset by SA_RESETHAND, so a second one ends the process at once.
extern "C" void on_stop_signal(int) {
    stop_requested.store(true);
    static const char message[] = "\nllm_batch: stopping after the requests in flight (again to quit now)\n";
    const ssize_t ignored = ::write(STDERR_FILENO, message, sizeof message - 1);
    (void)ignored;
}

const char* description =
    "Sends every request of an OpenAI Batch-format JSONL file (one\n"
    "{\"custom_id\", \"method\": \"POST\", \"url\", \"body\"} a line) to BASE-URL + url through a\n"
    "rate-limit gate, and appends one OpenAI Batch output line per input line to\n"
    "--output. 429, 5xx and network errors are retried (retry-after, else exponential\n"
    "backoff with jitter); other 4xx are final. Without --rpm/--tpm the limits are\n"
    "learned from the response headers. An existing non-empty --output is refused\n"
    "unless --resume, which skips the input lines it already answers and sends again\n"
    "those whose record is a transient error (network_error, server_error,\n"
    "rate_limited, http_408); --retry-failed (implies --resume) sends every failed\n"
    "line again. Each record names its input line (\"line\": N) besides custom_id.\n"
    "Resume sends twice at most the requests in flight when the last run ended\n"
    "(counted as \"resent\" in the summary); every request carries an\n"
    "Idempotency-Key (input hash, line, custom_id: the same on every resume) and its\n"
    "custom_id as X-Request-ID. Resume starts with the limits' buckets empty (the\n"
    "provider's quota may still be drawn down); OUTPUT.journal keeps what it needs.\n"
    "A server's retry-after (or reset) pauses the run at most 10 min, however long\n"
    "it asks for (the gate's max_pause). SIGINT/SIGTERM: requests in flight finish,\n"
    "nothing new is sent, and waits in the gate (a 429 pause included) end at once.\n"
    "Requests without max_tokens/max_completion_tokens reserve 256 output tokens.\n"
    "Exit status: 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted.";

}  // namespace

int main(int argc, char** argv) {
    llm_batch::options o;
    std::string api_key_env;
    examples::flags::parser flags("llm_batch", description);
    flags.text("input", o.input_path, "FILE", "requests, OpenAI Batch JSONL").required();
    flags.text("output", o.output_path, "FILE", "results, OpenAI Batch output JSONL").required();
    flags.text("base-url", o.base_url, "URL", "server root, e.g. http://127.0.0.1:8080").required();
    flags.text("api-key-env", api_key_env, "NAME", "environment variable holding the API key");
    flags.integer("concurrency", o.concurrency, "N", "requests in flight at most (default 16)", 1, 4096);
    flags.integer<std::int64_t>("rpm", o.requests_per_minute, "N", "requests per minute (default: from headers)", 0,
                                1'000'000'000);
    flags.integer<std::int64_t>("tpm", o.tokens_per_minute, "N", "tokens per minute (default: from headers)", 0,
                                1'000'000'000'000);
    flags.integer("max-attempts", o.max_attempts, "N", "attempts per request (default 5)", 1, 100);
    flags.toggle("resume", o.resume, "continue an existing output file, retrying transient errors");
    flags.toggle("retry-failed", o.retry_failed, "with --resume: send every line whose record is an error again");
    bool no_progress = false;
    flags.toggle("no-progress", no_progress, "no progress line and no final summary on stderr");
    flags.text("summary-json", o.summary_json_path, "FILE", "write the run's counts and rates as JSON");
    bool no_gate = false;
    flags.toggle("no-gate", no_gate, "send without the gate, for contrast (only retries slow it)");
    examples::flags::parse_or_exit(flags, argc, argv);
    o.progress = !no_progress;
    o.use_gate = !no_gate;

    if (!api_key_env.empty()) {
        const char* key = std::getenv(api_key_env.c_str());
        if (key == nullptr || *key == '\0') {
            examples::flags::usage_failure(flags, "environment variable " + api_key_env + " (--api-key-env) is not set");
        }
        o.api_key = key;
    }

    ::signal(SIGPIPE, SIG_IGN);  // a server closing a connection is an error to retry, not a crash
    struct sigaction stop {};
    stop.sa_handler = on_stop_signal;
    stop.sa_flags = SA_RESETHAND;
    sigemptyset(&stop.sa_mask);
    ::sigaction(SIGINT, &stop, nullptr);
    ::sigaction(SIGTERM, &stop, nullptr);
    o.stop = &stop_requested;

    try {
        llm_batch::runner runner(o);
        return runner.run().exit_status();
    } catch (const llm_batch::setup_error& e) {
        examples::flags::usage_failure(flags, e.what());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "llm_batch: %s\n", e.what());
        return 1;
    }
}
