# Installs the build tree into a scratch prefix, moves the prefix elsewhere (nothing installed may
# hold a path of the build), then builds and runs a consumer project against each component:
#   1. core and safetensors, with Highway and Torch hidden from find_package: they need neither;
#   2. kernels, torch and ptq (where built);
#   3. COMPONENTS torch with Torch hidden must fail and say what is missing.
# Inputs: SOURCE_DIR, BUILD_DIR, WORK_DIR, COMPONENTS (built ones), TORCH_DIR, LAUNCHER.
cmake_policy(SET CMP0057 NEW)  # if(IN_LIST) in script mode
file(REMOVE_RECURSE ${WORK_DIR})

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer step failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/staging --component Unspecified)
file(RENAME ${WORK_DIR}/staging ${WORK_DIR}/moved)
set(prefix ${WORK_DIR}/moved)

# No installed text file names the source, the build or the staging folder.
file(GLOB_RECURSE installed LIST_DIRECTORIES false ${prefix}/*.cmake ${prefix}/*.hpp ${prefix}/*.h)
foreach(f ${installed})
  file(READ ${f} text)
  foreach(p ${SOURCE_DIR} ${BUILD_DIR} ${WORK_DIR}/staging ${TORCH_DIR})
    string(FIND "${text}" "${p}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "${f} holds the build machine's path ${p}")
    endif()
  endforeach()
endforeach()

set(common -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
# 1. The core and safetensors alone.
step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/core ${common} -DCMAKE_PREFIX_PATH=${prefix}
     -DQCAST_CONSUMER_COMPONENTS=core,safetensors -DCMAKE_DISABLE_FIND_PACKAGE_hwy=ON -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON)
step(${CMAKE_COMMAND} --build ${WORK_DIR}/core)
step(${WORK_DIR}/core/consumer_core)
step(${WORK_DIR}/core/consumer_safetensors)

# 2. Every other component that was built (cuda is linked through torch where it was built).
set(wanted kernels)
foreach(c torch ptq)
  if(c IN_LIST COMPONENTS)
    list(APPEND wanted ${c})
  endif()
endforeach()
string(REPLACE ";" "," wanted_arg "${wanted}")  # commas: a list does not survive execute_process
step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/all ${common} -DCMAKE_PREFIX_PATH=${prefix}
     -DTorch_DIR=${TORCH_DIR} -DQCAST_CONSUMER_COMPONENTS=${wanted_arg})
step(${CMAKE_COMMAND} --build ${WORK_DIR}/all)
foreach(c ${wanted})
  step(${WORK_DIR}/all/consumer_${c})
endforeach()
message(STATUS "consumer: ran core and safetensors (without Highway or Torch) and ${wanted} against a moved install")

# 3. A missing dependency is named.
if(torch IN_LIST COMPONENTS)
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/no_torch ${common}
                          -DCMAKE_PREFIX_PATH=${prefix} -DQCAST_CONSUMER_COMPONENTS=torch
                          -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "qcast::torch needs Torch [0-9]+\\.[0-9]+")
    message(FATAL_ERROR "COMPONENTS torch without Torch: exit ${rc}, want a failure naming Torch's version:\n${out}\n${err}")
  endif()
  message(STATUS "consumer: COMPONENTS torch without Torch fails and says so")
endif()
