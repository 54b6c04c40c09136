#pragma once
// ratelimit: every part that needs no third-party library.

#include "adaptive_limiter.hpp"
#include "clock.hpp"
#include "limiter.hpp"
#include "rate.hpp"
#include "token_bucket.hpp"
