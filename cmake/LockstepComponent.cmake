# lockstep_component(<target> <export-name>): declares one library of the
# project. It gets the warning flags, is part of lockstep::lockstep, is
# installed, and is known to users as lockstep::<export-name>.
function(lockstep_component target export_name)
  add_library(lockstep::${export_name} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${export_name}
                                             OUTPUT_NAME lockstep_${export_name})
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:lockstep_build_flags>)
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  # Components declared side by side (core and base) share one header folder.
  get_property(headers_installed DIRECTORY PROPERTY LOCKSTEP_HEADERS_INSTALLED)
  if(NOT headers_installed)
    install(DIRECTORY include/lockstep DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
    set_property(DIRECTORY PROPERTY LOCKSTEP_HEADERS_INSTALLED ON)
  endif()
  set_property(GLOBAL APPEND PROPERTY LOCKSTEP_COMPONENTS ${target})
  set_property(GLOBAL APPEND PROPERTY LOCKSTEP_EXPORTED_TARGETS ${target})
endfunction()

# Interface targets that wrap found libraries must be exported beside ours.
function(lockstep_export_helper target)
  set_property(GLOBAL APPEND PROPERTY LOCKSTEP_EXPORTED_TARGETS ${target})
endfunction()
