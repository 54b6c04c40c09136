# Installs ratelimit into a temporary prefix, then builds and runs two
# consumers: one with find_package(ratelimit CONFIG), one with add_subdirectory.
# Catch2 is hidden from both, so a consumer never needs a test dependency.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

set(common -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=ON)

# 1. Install from a build that builds nothing but the package.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/lib ${common}
    -DRATELIMIT_BUILD_TESTS=OFF -DRATELIMIT_BUILD_EXAMPLES=OFF -DRATELIMIT_BUILD_BENCHMARKS=OFF
    -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/lib)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/lib)
foreach(installed include/ratelimit/ratelimit.hpp share/cmake/ratelimit/ratelimitConfig.cmake
                  share/cmake/ratelimit/ratelimitConfigVersion.cmake share/pkgconfig/ratelimit.pc)
  if(NOT EXISTS ${WORK_DIR}/prefix/${installed})
    message(FATAL_ERROR "not installed: ${installed}")
  endif()
endforeach()

# 2. find_package from the prefix.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${WORK_DIR}/find ${common}
    -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DUSE_FIND_PACKAGE=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/find)
run(${WORK_DIR}/find/consumer)
if(EXISTS ${WORK_DIR}/find/redis_consumer)
  run(${WORK_DIR}/find/redis_consumer)
  message(STATUS "package: ratelimit::redis found and linked")
endif()

# 3. add_subdirectory of a vendored copy (as a git submodule would be):
#    its tests, examples and benchmarks must stay off.
file(COPY ${SOURCE_DIR}/include ${SOURCE_DIR}/cmake ${SOURCE_DIR}/CMakeLists.txt
     ${SOURCE_DIR}/tests ${SOURCE_DIR}/examples ${SOURCE_DIR}/benchmarks
     DESTINATION ${WORK_DIR}/vendored/third_party/ratelimit)
file(COPY ${SOURCE_DIR}/tests/package/consumer/ DESTINATION ${WORK_DIR}/vendored)
run(${CMAKE_COMMAND} -S ${WORK_DIR}/vendored -B ${WORK_DIR}/sub ${common} -DUSE_FIND_PACKAGE=OFF)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/sub)
run(${WORK_DIR}/sub/consumer)
if(EXISTS ${WORK_DIR}/sub/redis_consumer)
  run(${WORK_DIR}/sub/redis_consumer)
endif()
if(EXISTS ${WORK_DIR}/sub/third_party/ratelimit/tests)
  message(FATAL_ERROR "add_subdirectory built ratelimit's tests")
endif()

# 4. pkg-config sees the package.
find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  set(ENV{PKG_CONFIG_PATH} ${WORK_DIR}/prefix/share/pkgconfig)
  run(${PKG_CONFIG} --cflags ratelimit)
endif()
message(STATUS "package: install, find_package, add_subdirectory and pkg-config all work")
