#pragma once
// ratelimit/redis.hpp: the Redis-backed limiters (needs hiredis: link ratelimit::redis).

#include "redis/connection.hpp"
#include "redis/options.hpp"
#include "redis/token_bucket.hpp"
#include "redis/hash_ring.hpp"
#include "redis/batched.hpp"
#include "redis/concurrency_limiter.hpp"
#include "redis/fixed_window.hpp"
#include "redis/sliding_window_counter.hpp"
#include "redis/sliding_window_log.hpp"
