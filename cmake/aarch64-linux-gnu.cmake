# Cross build for 64-bit ARM Linux with Debian's toolchain (g++-aarch64-linux-gnu); the binaries
# run under qemu-user. scripts/test-arm.sh drives it:
#
#   cmake -S . -B build-arm64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DTRINITY_ARM64_ROOT=$PWD/build-arm64-root -DTRINITY_FRONTENDS=OFF -DTRINITY_BENCH=OFF
#
# The C and C++ runtime (glibc, libstdc++) are the toolchain's own, in /usr/aarch64-linux-gnu. The
# engine's target libraries (fmt, PCRE2, GoogleTest, nlohmann-json) are Debian's arm64 packages
# unpacked into TRINITY_ARM64_ROOT with `apt-get download` + `dpkg -x`, not installed through
# multiarch: multiarch needs the amd64 and arm64 copies of every shared dependency at the same
# version, so installing libgtest-dev:arm64 upgrades the host's libssl3, krb5, e2fsprogs... on a
# machine others are using. Unpacking changes nothing installed; the result is the same files.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

if(NOT DEFINED TRINITY_ARM64_ROOT)
  if(DEFINED ENV{TRINITY_ARM64_ROOT})
    set(TRINITY_ARM64_ROOT "$ENV{TRINITY_ARM64_ROOT}")
  else()
    get_filename_component(TRINITY_ARM64_ROOT "${CMAKE_CURRENT_LIST_DIR}/../build-arm64-root" ABSOLUTE)
  endif()
endif()
# try_compile projects see the same root.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TRINITY_ARM64_ROOT)

# Libraries, headers and CMake packages only from the unpacked arm64 packages; programs from the host.
set(CMAKE_FIND_ROOT_PATH "${TRINITY_ARM64_ROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_LIBDIR} "${TRINITY_ARM64_ROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${TRINITY_ARM64_ROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${TRINITY_ARM64_ROOT}")

# gtest_discover_tests and ctest run the test binaries through qemu; -L: the toolchain's dynamic
# loader and libc (the unpacked fmt and PCRE2 are found through the binaries' build RPATH).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
