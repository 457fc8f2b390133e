# Build step (cmake -P): makes a protoc-ready copy of one of etcd's v3 API .proto files as
# Debian's golang-etcd-server-dev ships them. The wire definition stays etcd's own; only
# what is Go-specific or for the HTTP gateway goes:
#   - the imports of gogoproto/gogo.proto and google/api/annotations.proto,
#   - file options `option (gogoproto.X) = ...;` and field options `[(gogoproto.X) = ...]`,
#   - every `option (google.api.http) = { ... };` block (braces nest: additional_bindings),
# and the imports of the other etcd files become "etcdpb/<file>.proto" (the copies' layout).
# Anything of gogoproto or google.api left afterwards fails the build: a new shape of the
# Debian file must be looked at, not compiled blindly.
#   cmake -DIN=/usr/share/.../rpc.proto -DOUT=<build>/proto/etcdpb/rpc.proto -P clean_proto.cmake
cmake_minimum_required(VERSION 3.25)
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "clean_proto.cmake: IN and OUT must be set")
endif()
if(NOT EXISTS "${IN}")
  message(FATAL_ERROR "clean_proto.cmake: ${IN} does not exist (apt-get install golang-etcd-server-dev)")
endif()
file(READ "${IN}" text)

string(REGEX REPLACE "import \"(gogoproto|google/api)/[^\"]*\";[ \t]*\n?" "" text "${text}")
string(REGEX REPLACE "option \\(gogoproto\\.[A-Za-z_]+\\)[ \t]*=[ \t]*[A-Za-z0-9_\"]+;[ \t]*\n?" "" text "${text}")
string(REGEX REPLACE "[ \t]*\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")

# option (google.api.http) = { ... }; : found by FIND, its end by counting braces.
set(marker "option (google.api.http)")
while(TRUE)
  string(FIND "${text}" "${marker}" start)
  if(start EQUAL -1)
    break()
  endif()
  string(LENGTH "${text}" len)
  string(SUBSTRING "${text}" ${start} -1 rest)
  string(FIND "${rest}" "{" open)
  if(open EQUAL -1)
    message(FATAL_ERROR "clean_proto.cmake: ${IN}: no '{' after ${marker}")
  endif()
  math(EXPR i "${start} + ${open}")
  set(depth 0)
  while(TRUE)
    if(i GREATER_EQUAL len)
      message(FATAL_ERROR "clean_proto.cmake: ${IN}: unbalanced braces after ${marker}")
    endif()
    string(SUBSTRING "${text}" ${i} 1 c)
    if(c STREQUAL "{")
      math(EXPR depth "${depth} + 1")
    elseif(c STREQUAL "}")
      math(EXPR depth "${depth} - 1")
      if(depth EQUAL 0)
        break()
      endif()
    endif()
    math(EXPR i "${i} + 1")
  endwhile()
  # Past the closing brace: blanks, then the ';' that ends the option.
  math(EXPR i "${i} + 1")
  while(i LESS len)
    string(SUBSTRING "${text}" ${i} 1 c)
    if(c STREQUAL ";")
      math(EXPR i "${i} + 1")
      break()
    elseif(NOT c MATCHES "[ \t\r\n]")
      message(FATAL_ERROR "clean_proto.cmake: ${IN}: '${c}' where ';' should end ${marker}")
    endif()
    math(EXPR i "${i} + 1")
  endwhile()
  string(SUBSTRING "${text}" 0 ${start} head)
  string(SUBSTRING "${text}" ${i} -1 tail)
  set(text "${head}${tail}")
endwhile()

# What the blocks leave: `rpc X(A) returns (B) {}`.
string(REGEX REPLACE "\\{[ \t\r\n]*\\}" "{}" text "${text}")

string(REGEX REPLACE "import \"etcd/[A-Za-z0-9_/]*/([A-Za-z0-9_]+\\.proto)\";" "import \"etcdpb/\\1\";" text "${text}")

foreach(left gogoproto google.api google/api "import \"etcd/")
  string(FIND "${text}" "${left}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "clean_proto.cmake: ${IN}: '${left}' is still there after cleaning; look at the file")
  endif()
endforeach()

get_filename_component(name "${IN}" NAME)
file(WRITE "${OUT}.tmp"
  "// Generated at build time by lib/etcd/clean_proto.cmake from\n// ${IN}\n"
  "// (gogoproto and google.api.http options dropped, imports made etcdpb/). Do not edit.\n"
  "${text}")
file(RENAME "${OUT}.tmp" "${OUT}")
