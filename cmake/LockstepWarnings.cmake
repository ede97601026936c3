# Warnings and sanitizers are INTERFACE targets linked by our own targets,
# never global flags, so that projects embedding lockstep keep their own.
add_library(lockstep_warnings INTERFACE)
target_compile_options(lockstep_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
    -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
    -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough -Werror=return-type>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)

# LOCKSTEP_SANITIZE=ON builds with AddressSanitizer and UndefinedBehaviorSanitizer,
# =thread with ThreadSanitizer (it cannot share a build with AddressSanitizer).
add_library(lockstep_sanitizers INTERFACE)
if(LOCKSTEP_SANITIZE STREQUAL "thread")
  target_compile_options(lockstep_sanitizers INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=thread -fno-omit-frame-pointer>)
  target_link_options(lockstep_sanitizers INTERFACE -fsanitize=thread)
elseif(LOCKSTEP_SANITIZE)
  target_compile_options(lockstep_sanitizers INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined>)
  target_link_options(lockstep_sanitizers INTERFACE -fsanitize=address,undefined)
endif()

# Every lockstep-built target links this one.
add_library(lockstep_build_flags INTERFACE)
target_link_libraries(lockstep_build_flags INTERFACE lockstep_warnings lockstep_sanitizers)
