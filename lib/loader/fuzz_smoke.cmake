# Runs fuzz_loader for a bounded number of inputs over a corpus seeded with real images.
file(MAKE_DIRECTORY ${CORPUS})
foreach(seed ${SEEDS})
  if(EXISTS ${seed})
    file(COPY ${seed} DESTINATION ${CORPUS})
  endif()
endforeach()
execute_process(
  COMMAND ${FUZZER} -runs=200000 -max_total_time=120 -max_len=65536 -timeout=10 ${CORPUS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzz_loader found a failure (exit ${rc}); the crashing input is in the working directory")
endif()
