# Embed a text file in the program as a NUL-terminated C string:
#   cmake -DIN=page.html -DOUT=page.c -DNAME=sae_features_page -P embed.cmake
file(READ ${IN} _hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," _bytes "${_hex}")
string(REGEX REPLACE "((0x..,){24})" "\\1\n" _bytes "${_bytes}")
file(WRITE ${OUT} "/* Generated from ${IN} by embed.cmake: do not edit. */\nconst char ${NAME}[] = {\n${_bytes}0x00};\n")
