/* A statically linked program: gsrun must warn that LD_PRELOAD cannot reach it. */
#include <stdio.h>
int main(void) { puts("static"); return 0; }
