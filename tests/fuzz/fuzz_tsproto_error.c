/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for the error body decoder of lib/tsproto.c; the
 * checks are in tsproto_body.h. */
#define FUZZ_PDU_TYPE TSF_PDU_ERROR
#include "tsproto_body.h"
