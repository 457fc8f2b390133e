# CTest smoke run of a libFuzzer target: a bounded number of inputs over a corpus
# seeded from SEEDS (files and/or directories). Invoked as
#   cmake -DFUZZER=bin -DCORPUS=dir [-DSEEDS="a;b"] [-DRUNS=n] [-DMAX_TIME=s] [-DMAX_LEN=n] -P fuzz_smoke.cmake
if(NOT RUNS)
  set(RUNS 100000)
endif()
if(NOT MAX_TIME)
  set(MAX_TIME 30)
endif()
if(NOT MAX_LEN)
  set(MAX_LEN 65536)
endif()
file(MAKE_DIRECTORY ${CORPUS})
foreach(seed ${SEEDS})
  if(IS_DIRECTORY ${seed})
    file(GLOB files ${seed}/*.bin)
    file(COPY ${files} DESTINATION ${CORPUS})
  elseif(EXISTS ${seed})
    file(COPY ${seed} DESTINATION ${CORPUS})
  endif()
endforeach()
get_filename_component(name ${FUZZER} NAME)
execute_process(
  COMMAND ${FUZZER} -runs=${RUNS} -max_total_time=${MAX_TIME} -max_len=${MAX_LEN} -timeout=10 ${CORPUS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${name} found a failure (exit ${rc}); the crashing input is in the working directory")
endif()
