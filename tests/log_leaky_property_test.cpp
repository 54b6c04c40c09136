// Seeded random schedules for sliding_window_log and leaky_bucket on
// manual_clock, checked against brute-force reference models and against
// their guarantees on the full history of grants.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <vector>

#include <ratelimit/leaky_bucket.hpp>
#include <ratelimit/sliding_window_log.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;

namespace {

using ns = std::chrono::nanoseconds;

std::int64_t now_of(const manual_clock& clock) { return clock.now().time_since_epoch().count(); }
manual_clock::time_point at(std::int64_t t) { return manual_clock::time_point{ns{t}}; }

std::int64_t pick(std::mt19937_64& rng, std::int64_t low, std::int64_t high) {
    return std::uniform_int_distribution<std::int64_t>(low, high)(rng);
}

/// One grant: n permits usable at `time`.
struct granted {
    std::int64_t time;
    std::int64_t n;
};

/// Every half-open window [g, g + window) starting at a grant holds at most
/// `limit` permits (the fullest window starts at some grant).
std::int64_t fullest_window(std::vector<granted> grants, std::int64_t window) {
    std::sort(grants.begin(), grants.end(), [](const granted& a, const granted& b) { return a.time < b.time; });
    std::int64_t fullest = 0;
    for (std::size_t i = 0; i < grants.size(); ++i) {
        std::int64_t inside = 0;
        for (std::size_t j = i; j < grants.size() && grants[j].time < grants[i].time + window; ++j) inside += grants[j].n;
        fullest = std::max(fullest, inside);
    }
    return fullest;
}

/// The log's reference: every grant ever made, and the brute-force rule
/// "the earliest t, not before now nor before the latest grant (first come,
/// first served), at which the permits inside (t - window, t] plus n are at
/// most limit".
struct log_model {
    std::int64_t limit;
    std::int64_t window;
    std::vector<granted> grants;

    [[nodiscard]] std::int64_t inside(std::int64_t t) const {
        std::int64_t count = 0;
        for (const granted& g : grants) count += (g.time > t - window && g.time <= t) ? g.n : 0;
        return count;
    }

    /// When n (1 <= n <= limit) permits asked for at `now` would be granted.
    [[nodiscard]] std::int64_t earliest(std::int64_t now, std::int64_t n) const {
        std::int64_t floor = now;
        for (const granted& g : grants) floor = std::max(floor, g.time);
        std::vector<std::int64_t> candidates{floor};
        for (const granted& g : grants) {
            if (g.time + window > floor) candidates.push_back(g.time + window);
        }
        std::sort(candidates.begin(), candidates.end());
        for (std::int64_t t : candidates) {
            if (inside(t) + n <= limit) return t;
        }
        FAIL("no candidate fits");
        return floor;
    }
};

/// The leaky bucket's reference: every permit's slot, one interval apart,
/// and the queue counted slot by slot.
struct leaky_model {
    std::int64_t interval;
    std::int64_t max_queue;
    std::vector<std::int64_t> slots;  // in order

    /// The n slots a request at `now` would take.
    [[nodiscard]] std::vector<std::int64_t> next_slots(std::int64_t now, std::int64_t n) const {
        std::int64_t first = slots.empty() ? now : std::max(now, slots.back() + interval);
        std::vector<std::int64_t> taken;
        for (std::int64_t i = 0; i < n; ++i) taken.push_back(first + i * interval);
        return taken;
    }

    /// Permits waiting at `now` if `extra` slots were added: the slots after now.
    [[nodiscard]] std::int64_t waiting(std::int64_t now, const std::vector<std::int64_t>& extra) const {
        std::int64_t count = 0;
        for (std::int64_t s : slots) count += s > now ? 1 : 0;
        for (std::int64_t s : extra) count += s > now ? 1 : 0;
        return count;
    }
};

}  // namespace

TEST_CASE("the log grants exactly when a brute-force check of every window allows it", "[property][sliding_window_log]") {
    for (std::uint64_t seed = 1; seed <= 300; ++seed) {
        INFO("seed " << seed);
        std::mt19937_64 rng(seed);
        manual_clock clock{at(pick(rng, 0, 1000))};
        const std::int64_t limit = pick(rng, 1, 6);
        const std::int64_t window = pick(rng, 1, 60);
        ratelimit::sliding_window_log<manual_clock> log(limit, ns{window}, clock);
        log_model model{limit, window, {}};

        for (int step = 0; step < 120; ++step) {
            switch (pick(rng, 0, 3)) {
                case 0: clock.advance(ns{pick(rng, 0, window / 3)}); break;
                case 1: clock.advance(ns{pick(rng, 0, window)}); break;
                default: break;
            }
            const std::int64_t now = now_of(clock);
            const std::int64_t n = pick(rng, 1, limit + 1);
            const std::optional<std::int64_t> expected =
                n <= limit ? std::optional<std::int64_t>{model.earliest(now, n)} : std::nullopt;
            INFO("step " << step << " now " << now << " n " << n);
            REQUIRE(log.available() == [&] {
                std::int64_t most = 0;
                while (most < limit && model.earliest(now, most + 1) == now) ++most;
                return most;
            }());
            switch (pick(rng, 0, 4)) {
                case 0: {
                    const bool ok = log.try_acquire(n);
                    REQUIRE(ok == (expected && *expected == now));
                    if (ok) model.grants.push_back({now, n});
                    break;
                }
                case 1: {
                    const std::int64_t wait = pick(rng, 0, window);
                    const bool ok = log.try_acquire_for(n, ns{wait});
                    REQUIRE(ok == (expected && *expected <= now + wait));
                    if (ok) {
                        REQUIRE(now_of(clock) == *expected);  // slept exactly until the grant
                        model.grants.push_back({*expected, n});
                    } else {
                        REQUIRE(now_of(clock) == now);  // never slept in vain
                    }
                    break;
                }
                case 2: {
                    if (!expected) {
                        REQUIRE_THROWS_AS(log.reserve(n), ratelimit::capacity_exceeded);
                        break;
                    }
                    auto r = log.reserve(n);
                    REQUIRE(r.ready_at() == at(*expected));
                    model.grants.push_back({*expected, n});
                    break;
                }
                default: {
                    if (!expected) {
                        REQUIRE_THROWS_AS(log.acquire(n), ratelimit::capacity_exceeded);
                        break;
                    }
                    REQUIRE(log.acquire(n) == ns{*expected - now});
                    REQUIRE(now_of(clock) == *expected);
                    model.grants.push_back({*expected, n});
                    break;
                }
            }
            if (n <= limit) REQUIRE(log.time_until_available(n) == ns{model.earliest(now_of(clock), n) - now_of(clock)});
        }
        REQUIRE(fullest_window(model.grants, window) <= limit);
    }
}

TEST_CASE("with cancels in the mix the log still never admits more than limit in any window",
          "[property][sliding_window_log]") {
    for (std::uint64_t seed = 1; seed <= 300; ++seed) {
        INFO("seed " << seed);
        std::mt19937_64 rng(seed * 7919);
        manual_clock clock;
        const std::int64_t limit = pick(rng, 1, 6);
        const std::int64_t window = pick(rng, 1, 60);
        ratelimit::sliding_window_log<manual_clock> log(limit, ns{window}, clock);
        struct held {
            ratelimit::reservation<manual_clock> r;
            std::size_t index;
        };
        std::vector<held> reservations;
        std::vector<granted> grants;
        for (int step = 0; step < 150; ++step) {
            clock.advance(ns{pick(rng, 0, 1) == 0 ? 0 : pick(rng, 0, window / 2)});
            const std::int64_t n = pick(rng, 1, limit);
            switch (pick(rng, 0, 3)) {
                case 0:
                    if (log.try_acquire(n)) grants.push_back({now_of(clock), n});
                    break;
                case 1: {
                    auto r = log.reserve(n);
                    grants.push_back({r.ready_at().time_since_epoch().count(), n});
                    reservations.push_back({std::move(r), grants.size() - 1});
                    break;
                }
                default: {
                    if (reservations.empty()) break;
                    const auto which = static_cast<std::size_t>(pick(rng, 0, static_cast<std::int64_t>(reservations.size()) - 1));
                    held& h = reservations[which];
                    const std::int64_t before = log.available();
                    const bool newest = h.index == grants.size() - 1;
                    const std::int64_t ready = h.r.ready_at().time_since_epoch().count();
                    const bool in_time = now_of(clock) <= ready;
                    h.r.cancel();
                    // Given back exactly when it was the newest grant and not yet ready.
                    if (newest && in_time) {
                        // Granted at now: its places are free again at once.
                        if (ready == now_of(clock)) REQUIRE(log.available() == before + grants.back().n);
                        grants.pop_back();
                    } else {
                        REQUIRE(log.available() == before);
                    }
                    reservations.erase(reservations.begin() + static_cast<std::ptrdiff_t>(which));
                    break;
                }
            }
            REQUIRE(fullest_window(grants, window) <= limit);
        }
    }
}

TEST_CASE("the leaky bucket grants exactly by a slot-by-slot reference, never closer than an interval",
          "[property][leaky_bucket]") {
    for (std::uint64_t seed = 1; seed <= 300; ++seed) {
        INFO("seed " << seed);
        std::mt19937_64 rng(seed * 104729);
        manual_clock clock{at(pick(rng, 0, 1000))};
        const std::int64_t interval = pick(rng, 1, 20);
        const std::int64_t max_queue = pick(rng, 0, 5);
        ratelimit::leaky_bucket<manual_clock> bucket(ratelimit::rate::every(ns{interval}), max_queue, clock);
        leaky_model model{interval, max_queue, {}};
        struct held {
            ratelimit::reservation<manual_clock> r;
            std::vector<std::int64_t> slots;
        };
        std::vector<held> reservations;
        std::vector<granted> grants;  // at the last slot of each request

        for (int step = 0; step < 150; ++step) {
            switch (pick(rng, 0, 3)) {
                case 0: clock.advance(ns{pick(rng, 0, interval)}); break;
                case 1: clock.advance(ns{pick(rng, 0, 3 * interval * (max_queue + 1))}); break;
                default: break;
            }
            const std::int64_t now = now_of(clock);
            const std::int64_t n = pick(rng, 1, max_queue + 2);
            const std::vector<std::int64_t> slots = model.next_slots(now, n);
            const bool never = n > max_queue + 1;
            const bool full = !never && model.waiting(now, slots) > max_queue;
            const std::int64_t ready = slots.back();
            INFO("step " << step << " now " << now << " n " << n);
            REQUIRE(bucket.queue_size() == model.waiting(now, {}));
            const auto take = [&] {
                model.slots.insert(model.slots.end(), slots.begin(), slots.end());
                grants.push_back({ready, n});
            };
            switch (pick(rng, 0, 4)) {
                case 0: {
                    const bool ok = bucket.try_acquire(n);
                    REQUIRE(ok == (!never && !full && ready == now));
                    if (ok) take();
                    break;
                }
                case 1: {
                    const std::int64_t wait = pick(rng, 0, 2 * interval * (max_queue + 1));
                    const bool ok = bucket.try_acquire_for(n, ns{wait});
                    REQUIRE(ok == (!never && !full && ready <= now + wait));
                    REQUIRE(now_of(clock) == (ok ? ready : now));
                    if (ok) take();
                    break;
                }
                case 2: {
                    if (never) {
                        REQUIRE_THROWS_AS(bucket.reserve(n), ratelimit::capacity_exceeded);
                    } else if (full) {
                        REQUIRE_THROWS_AS(bucket.reserve(n), ratelimit::queue_full);
                    } else {
                        auto r = bucket.reserve(n);
                        REQUIRE(r.ready_at() == at(ready));
                        take();
                        reservations.push_back({std::move(r), slots});
                    }
                    break;
                }
                case 3: {
                    if (never) {
                        REQUIRE_THROWS_AS(bucket.acquire(n), ratelimit::capacity_exceeded);
                    } else if (full) {
                        REQUIRE_THROWS_AS(bucket.acquire(n), ratelimit::queue_full);
                    } else {
                        REQUIRE(bucket.acquire(n) == ns{ready - now});
                        REQUIRE(now_of(clock) == ready);
                        take();
                    }
                    break;
                }
                default: {
                    if (reservations.empty()) break;
                    const auto which = static_cast<std::size_t>(pick(rng, 0, static_cast<std::int64_t>(reservations.size()) - 1));
                    held& h = reservations[which];
                    // Its slots come back when they are the last on the schedule and not yet ready.
                    const bool last = !model.slots.empty() && model.slots.back() == h.slots.back() &&
                                      grants.back().time == h.slots.back();
                    const bool in_time = now_of(clock) <= h.r.ready_at().time_since_epoch().count();
                    h.r.cancel();
                    if (last && in_time) {
                        model.slots.resize(model.slots.size() - h.slots.size());
                        grants.pop_back();
                        // Slots already past are not given back: the schedule restarts at now.
                        if (h.slots.front() < now_of(clock)) model.slots.push_back(now_of(clock) - interval);
                    }
                    reservations.erase(reservations.begin() + static_cast<std::ptrdiff_t>(which));
                    break;
                }
            }
        }
        // Guarantee on the whole history: a grant of n comes at least n intervals after the previous grant.
        for (std::size_t i = 1; i < grants.size(); ++i) {
            INFO("grant " << i);
            REQUIRE(grants[i].time - grants[i - 1].time >= grants[i].n * interval);
        }
    }
}

TEST_CASE("single-permit streams are paced exactly: grants never closer than one interval, waits bounded by the queue",
          "[property][leaky_bucket]") {
    for (std::uint64_t seed = 1; seed <= 200; ++seed) {
        INFO("seed " << seed);
        std::mt19937_64 rng(seed * 31337);
        manual_clock clock;
        const std::int64_t interval = pick(rng, 1, 1000);
        const std::int64_t max_queue = pick(rng, 0, 8);
        ratelimit::leaky_bucket<manual_clock> bucket(ratelimit::rate::every(ns{interval}), max_queue, clock);
        std::vector<std::int64_t> grants;
        std::vector<ratelimit::reservation<manual_clock>> held;
        for (int step = 0; step < 200; ++step) {
            clock.advance(ns{pick(rng, 0, 2) == 0 ? pick(rng, 0, 2 * interval) : 0});
            const std::int64_t now = now_of(clock);
            try {
                held.push_back(bucket.reserve());
                const std::int64_t ready = held.back().ready_at().time_since_epoch().count();
                REQUIRE(ready - now <= max_queue * interval);  // at most max_queue ahead of it
                grants.push_back(ready);
            } catch (const ratelimit::queue_full&) {
                REQUIRE(bucket.queue_size() == max_queue);
            }
            // The callers whose grant is still in the future never exceed max_queue.
            const auto waiting = std::count_if(grants.begin(), grants.end(), [&](std::int64_t g) { return g > now; });
            REQUIRE(waiting <= max_queue);
            REQUIRE(bucket.queue_size() == waiting);
        }
        for (std::size_t i = 1; i < grants.size(); ++i) REQUIRE(grants[i] - grants[i - 1] >= interval);
    }
}
