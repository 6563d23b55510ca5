# Runs check_kernel_headers.cmake on fixtures so that the check cannot pass
# silently: the good tree must pass, the bad tree must fail with exactly the
# expected violations.
#   cmake -DCHECKER=<check_kernel_headers.cmake> -DFIXTURES=<fixtures/kernel_headers> -P <this>
cmake_minimum_required(VERSION 3.18)

execute_process(COMMAND "${CMAKE_COMMAND}" "-DCSRC=${FIXTURES}/good" -P "${CHECKER}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the good fixture was rejected:\n${out}${err}")
endif()
if(NOT out MATCHES "3 kernel-safe header\\(s\\)")
  message(FATAL_ERROR "the good fixture's kernel headers were not all found:\n${out}${err}")
endif()

execute_process(COMMAND "${CMAKE_COMMAND}" "-DCSRC=${FIXTURES}/bad" -P "${CHECKER}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(log "${out}${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "the bad fixture passed the check:\n${log}")
endif()
set(expected
  "ops/direct/direct_kernel.cuh includes <ATen/ATen.h>:"
  "ops/direct/direct_kernel.cuh includes <c10/cuda/CUDAStream.h>:"
  "ops/direct/direct_kernel.cuh includes <ATen/core/Tensor.h>:"
  "ops/indirect/indirect_kernel.cuh includes <torch/extension.h> \\(through ops/indirect/indirect_helper.h\\):"
  "ops/indirect/indirect_kernel.cuh includes <cuda_runtime.h> \\(through ops/indirect/deeper/more_helpers.h\\):"
  "ops/runtime/runtime_kernel.cuh includes <cuda.h>:"
  "ops/runtime/runtime_kernel.cuh includes <cuda_runtime_api.h>:"
  "ops/runtime/runtime_kernel.cuh includes <ATen/cuda/CUDAContext.h>:"
  "ops/named/named_params.h includes <ATen/core/Tensor.h>:"
  "ops/launcher/launcher_cuda.cu defines a __global__ kernel"
  "common/helpers.cuh defines a __global__ kernel"
)
list(LENGTH expected n_expected)
foreach(e IN LISTS expected)
  if(NOT log MATCHES "KERNEL RULE VIOLATION: ${e}")
    message(FATAL_ERROR "the bad fixture's violation '${e}' was not reported:\n${log}")
  endif()
endforeach()
string(REGEX MATCHALL "KERNEL RULE VIOLATION" found "${log}")
list(LENGTH found n_found)
if(NOT n_found EQUAL n_expected)
  message(FATAL_ERROR "expected ${n_expected} violations, the check reported ${n_found}:\n${log}")
endif()
message(STATUS "the check passes the good fixture and reports all ${n_expected} violations of the bad one")
