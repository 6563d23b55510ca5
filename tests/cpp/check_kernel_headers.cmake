# DESIGN.md's kernel rule as a check, run by ctest (kernel_header_rule):
#
#   cmake -DCSRC=<csrc folder> -P check_kernel_headers.cmake
#
# Fails when
#  1. a header that is kernel-safe by its name (docs/adding-an-op.md: kernel bodies
#     *_kernel.cuh and every other device header *.cuh, parameter structs
#     *_params.h, shared math *_math.h), or a project header it includes with
#     "quotes" (followed transitively), includes a tensor or runtime host header:
#     ATen/ATen.h, ATen/Tensor.h, ATen/core/Tensor.h, ATen/Functions.h, ATen/ops/*,
#     ATen/native/*, ATen/cuda/*, torch/* (except the header-only torch/headeronly/*),
#     c10/cuda/*, cuda_runtime.h, cuda_runtime_api.h, cuda.h.
#     Header-only utilities (c10/util/Half.h, c10/util/BFloat16.h, ATen/OpMathType.h,
#     standard headers) are fine.
#  2. any other source file under CSRC (.cu, .cuh, .h, .cpp...) defines a __global__
#     kernel: kernels live in *_kernel.cuh so the CPU harness can run them.
# Comments are ignored; every violation is listed.
cmake_minimum_required(VERSION 3.18)
if(NOT CSRC OR NOT IS_DIRECTORY "${CSRC}")
  message(FATAL_ERROR "check_kernel_headers: pass -DCSRC=<folder to check>")
endif()
get_filename_component(CSRC "${CSRC}" ABSOLUTE)

set(FORBIDDEN
  "^ATen/ATen\\.h$" "^ATen/Tensor\\.h$" "^ATen/core/Tensor\\.h$" "^ATen/core/TensorBody\\.h$"
  "^ATen/Functions\\.h$" "^ATen/ops/" "^ATen/native/" "^ATen/cuda/" "^torch/" "^c10/cuda/"
  "^cuda_runtime\\.h$" "^cuda_runtime_api\\.h$" "^cuda\\.h$")
set(ALLOWED "^torch/headeronly/")

# The text of a file without comments (and, with STRINGS, without string literals).
function(read_code path out)
  file(READ "${path}" text)
  string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" " " text "${text}")
  string(REGEX REPLACE "//[^\n]*" "" text "${text}")
  if(ARGN STREQUAL "STRINGS")
    string(REGEX REPLACE "\"([^\"\\\\\n]|\\\\.)*\"" "\"\"" text "${text}")
  endif()
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

function(rel path out)
  file(RELATIVE_PATH r "${CSRC}" "${path}")
  set(${out} "${r}" PARENT_SCOPE)
endfunction()

set(violations "")

# --- 1. includes of kernel headers --------------------------------------------
file(GLOB_RECURSE kernels LIST_DIRECTORIES false
     "${CSRC}/*.cuh" "${CSRC}/*_params.h" "${CSRC}/*_math.h")
list(SORT kernels)
foreach(kernel IN LISTS kernels)
  rel("${kernel}" kernel_rel)
  set(queue "${kernel}")
  set(seen "")
  while(queue)
    list(POP_FRONT queue file)
    if(file IN_LIST seen)
      continue()
    endif()
    list(APPEND seen "${file}")
    rel("${file}" file_rel)
    get_filename_component(dir "${file}" DIRECTORY)
    read_code("${file}" code)
    string(REGEX MATCHALL "#[ \t]*include[ \t]*[<\"][^>\"\n]+[>\"]" includes "${code}")
    foreach(inc IN LISTS includes)
      string(REGEX REPLACE "#[ \t]*include[ \t]*([<\"])([^>\"\n]+)[>\"]" "\\1" kind "${inc}")
      string(REGEX REPLACE "#[ \t]*include[ \t]*([<\"])([^>\"\n]+)[>\"]" "\\2" name "${inc}")
      set(bad FALSE)
      foreach(pattern IN LISTS FORBIDDEN)
        if(name MATCHES "${pattern}" AND NOT name MATCHES "${ALLOWED}")
          set(bad TRUE)
        endif()
      endforeach()
      if(bad)
        if(file STREQUAL kernel)
          set(via "")
        else()
          set(via " (through ${file_rel})")
        endif()
        list(APPEND violations
             "${kernel_rel} includes <${name}>${via}: kernel-safe headers include no tensor or CUDA runtime host headers")
      elseif(kind STREQUAL "\"" AND EXISTS "${dir}/${name}")
        get_filename_component(next "${dir}/${name}" ABSOLUTE)
        list(APPEND queue "${next}")
      endif()
    endforeach()
  endwhile()
endforeach()

# --- 2. __global__ outside *_kernel.cuh ----------------------------------------
file(GLOB_RECURSE sources LIST_DIRECTORIES false
     "${CSRC}/*.cu" "${CSRC}/*.cuh" "${CSRC}/*.h" "${CSRC}/*.hpp" "${CSRC}/*.cpp" "${CSRC}/*.cc")
list(SORT sources)
foreach(src IN LISTS sources)
  if(src MATCHES "_kernel\\.cuh$")
    continue()
  endif()
  read_code("${src}" code STRINGS)
  if(code MATCHES "(^|[^A-Za-z0-9_])__global__([^A-Za-z0-9_]|$)")
    rel("${src}" src_rel)
    list(APPEND violations
         "${src_rel} defines a __global__ kernel: kernels live in <op>_kernel.cuh")
  endif()
endforeach()

list(LENGTH kernels n_kernels)
list(LENGTH sources n_sources)
if(violations)
  list(LENGTH violations n)
  foreach(v IN LISTS violations)
    message("KERNEL RULE VIOLATION: ${v}")
  endforeach()
  message(FATAL_ERROR "${n} violation(s) of DESIGN.md's kernel rules in ${CSRC}")
endif()
message(STATUS "kernel rules hold: ${n_kernels} kernel-safe header(s), ${n_sources} source file(s) checked")
