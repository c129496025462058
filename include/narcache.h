/*
 * libnarcache -- an embeddable Nix binary-cache engine (NAR, narinfo,
 * signatures, serving). This umbrella header includes every public module
 * header; most users include only this one.
 *
 * The headers are the specification: every public function documents its
 * ownership rules, return codes and thread rules where it is declared.
 * Threading summary: see narcache/common.h.
 */
#ifndef NARCACHE_H
#define NARCACHE_H

#include "narcache/common.h"
#include "narcache/auth.h"
#include "narcache/compress.h"
#include "narcache/hash.h"
#include "narcache/nar.h"
#include "narcache/narinfo.h"
#include "narcache/server.h"
#include "narcache/store.h"

#endif /* NARCACHE_H */
