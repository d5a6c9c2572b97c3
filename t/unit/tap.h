/*
 * The unit tests' TAP output: "ok N - name" or "not ok N - name", counted
 * in tests and failures, which each test program sums up at its end.
 */

#ifndef REPLAY_UNIT_TAP_H
#define REPLAY_UNIT_TAP_H

#include <stdio.h>


static int  tests, failures;


static void
check(int ok, const char *name)
{
    tests++;

    if (!ok) {
        failures++;
    }

    printf("%sok %d - %s\n", ok ? "" : "not ", tests, name);
}

#endif /* REPLAY_UNIT_TAP_H */
