# Line coverage of the CUDA kernel sources run by the CPU harness.
# Included by tests/cpp/CMakeLists.txt after the kernelzoo_cuda_harness target.
#
# KERNELZOO_HARNESS_COVERAGE=ON (GCC only) compiles every HARNESS suite with gcov
# instrumentation of the functions defined under csrc/, and adds two ctest tests
# (label cuda_emulation) around the suites through the fixture kernelzoo_coverage:
#   kernel_coverage_reset   before them: deletes the counters of earlier runs;
#   kernel_coverage_report  after them: merges the counters of every suite and
#                           instantiation into <build>/coverage/kernel_coverage.txt
#                           (+ .json), which tests/run prints.
# kernelzoo_add_test calls kernelzoo_harness_coverage() for each HARNESS suite.
# Independently,
# kernel_coverage_selftest (label coverage) checks the report on a fixture with
# known lines.
# See docs/gpu-verification.md, "Coverage of the kernel sources".
option(KERNELZOO_HARNESS_COVERAGE
       "Measure line coverage of the CUDA kernel sources in the CUDA-emulation tests (gcov)" ON)

set(KERNELZOO_COVERAGE_ON FALSE)
set(KERNELZOO_COVERAGE_TOOL "${CMAKE_CURRENT_LIST_DIR}/kernel_coverage.py")
set(_kz_cov_dir "${CMAKE_CURRENT_LIST_DIR}")
set(_kz_cov_out "${PROJECT_BINARY_DIR}/coverage")

# gcov of the same GCC version as the compiler.
set(_kz_gcov_ok FALSE)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND Python3_Interpreter_FOUND)
  string(REGEX MATCH "^[0-9]+" _kz_gcc_major "${CMAKE_CXX_COMPILER_VERSION}")
  get_filename_component(_kz_cxx_dir "${CMAKE_CXX_COMPILER}" DIRECTORY)
  find_program(KERNELZOO_GCOV NAMES gcov-${_kz_gcc_major} gcov HINTS "${_kz_cxx_dir}"
               DOC "gcov of the C++ compiler's GCC version")
  if(KERNELZOO_GCOV)
    set(_kz_gcov_ok TRUE)
  endif()
endif()

# The flags of an instrumented build; the self-test compiles its fixture with them.
#  -O0: at -O1 and above GCC inlines and merges blocks before it instruments them,
#       so lines of inlined helpers and merged branches would vanish from the count.
#  -fprofile-filter-files: only functions defined in csrc/ (kernel bodies, device
#       helpers) carry counters; the harness and the tests themselves do not.
set(KERNELZOO_COVERAGE_FLAGS -O0 --coverage -fprofile-abs-path
    "-fprofile-filter-files=(^|/)csrc/")

if(KERNELZOO_HARNESS_COVERAGE)
  if(NOT _kz_gcov_ok)
    message(WARNING "kernelzoo: KERNELZOO_HARNESS_COVERAGE needs GCC, its gcov and a Python "
                    "interpreter; the CUDA-emulation tests are built without coverage")
  else()
    target_compile_options(kernelzoo_cuda_harness INTERFACE ${KERNELZOO_COVERAGE_FLAGS})
    target_link_options(kernelzoo_cuda_harness INTERFACE --coverage)
    set(KERNELZOO_COVERAGE_ON TRUE)
    set(_kz_cov_common --build "${CMAKE_CURRENT_BINARY_DIR}" --out "${_kz_cov_out}")
    add_test(NAME kernel_coverage_reset
             COMMAND "${Python3_EXECUTABLE}" "${_kz_cov_dir}/kernel_coverage.py" reset
                     ${_kz_cov_common})
    add_test(NAME kernel_coverage_report
             COMMAND "${Python3_EXECUTABLE}" "${_kz_cov_dir}/kernel_coverage.py" report
                     ${_kz_cov_common} --source "${PROJECT_SOURCE_DIR}" --gcov "${KERNELZOO_GCOV}")
    set_tests_properties(kernel_coverage_reset PROPERTIES
                         FIXTURES_SETUP kernelzoo_coverage LABELS cuda_emulation)
    set_tests_properties(kernel_coverage_report PROPERTIES
                         FIXTURES_CLEANUP kernelzoo_coverage LABELS cuda_emulation)
    message(STATUS "kernelzoo: CUDA-emulation tests measure kernel line coverage "
                   "(${KERNELZOO_GCOV}; report: ${_kz_cov_out}/kernel_coverage.txt)")
  endif()
endif()

# For a HARNESS suite `target` (called by kernelzoo_add_test with the name of
# its list of test properties): the suite's tests require the fixture, and its
# counters of an earlier build are deleted before it is relinked (else the
# test discovery, which runs the new binary at build time, has libgcov report a
# checksum mismatch).
function(kernelzoo_harness_coverage target props_var)
  if(NOT KERNELZOO_COVERAGE_ON)
    return()
  endif()
  add_custom_command(TARGET ${target} PRE_LINK
                     COMMAND "${Python3_EXECUTABLE}" "${KERNELZOO_COVERAGE_TOOL}" reset
                             --build "${CMAKE_CURRENT_BINARY_DIR}/CMakeFiles/${target}.dir"
                     VERBATIM)
  set(${props_var} ${${props_var}} FIXTURES_REQUIRED kernelzoo_coverage PARENT_SCOPE)
endfunction()

if(_kz_gcov_ok)
  add_test(NAME kernel_coverage_selftest
           COMMAND "${Python3_EXECUTABLE}" "${_kz_cov_dir}/selftest.py"
                   --cxx "${CMAKE_CXX_COMPILER}" --gcov "${KERNELZOO_GCOV}"
                   --work "${_kz_cov_out}/selftest" -- ${KERNELZOO_COVERAGE_FLAGS})
  set_tests_properties(kernel_coverage_selftest PROPERTIES LABELS coverage TIMEOUT 120)
endif()
