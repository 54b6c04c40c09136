#pragma once
// Catch2 v2 or v3, whichever the build found.
#if RATELIMIT_CATCH_VERSION == 3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
