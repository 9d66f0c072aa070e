use std::sync::LazyLock;

use redis::Script;

/// The Lua scripts, loaded once per process (`EVALSHA`, falling back to `EVAL` after a restart).
pub(crate) struct Scripts {
    pub(crate) dead_letter_unread: Script,
    pub(crate) promote: Script,
    pub(crate) ack: Script,
    pub(crate) requeue: Script,
    pub(crate) dead_letter: Script,
    pub(crate) extend: Script,
    pub(crate) reclaim: Script,
    pub(crate) retire: Script,
    pub(crate) stats: Script,
    pub(crate) purge: Script,
    pub(crate) requeue_dead: Script,
    pub(crate) store_result: Script,
    pub(crate) chord_join: Script,
    pub(crate) chord_fail: Script,
    pub(crate) release: Script,
    pub(crate) reserve_slot: Script,
    pub(crate) renew: Script,
    pub(crate) remember: Script,
    pub(crate) members: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    dead_letter_unread: Script::new(include_str!("scripts/dead_letter_unread.lua")),
    promote: Script::new(include_str!("scripts/promote.lua")),
    ack: Script::new(include_str!("scripts/ack.lua")),
    requeue: Script::new(include_str!("scripts/requeue.lua")),
    dead_letter: Script::new(include_str!("scripts/dead_letter.lua")),
    extend: Script::new(include_str!("scripts/extend.lua")),
    reclaim: Script::new(include_str!("scripts/reclaim.lua")),
    retire: Script::new(include_str!("scripts/retire.lua")),
    stats: Script::new(include_str!("scripts/stats.lua")),
    purge: Script::new(include_str!("scripts/purge.lua")),
    requeue_dead: Script::new(include_str!("scripts/requeue_dead.lua")),
    store_result: Script::new(include_str!("scripts/store_result.lua")),
    chord_join: Script::new(include_str!("scripts/chord_join.lua")),
    chord_fail: Script::new(include_str!("scripts/chord_fail.lua")),
    release: Script::new(include_str!("scripts/release.lua")),
    reserve_slot: Script::new(include_str!("scripts/reserve_slot.lua")),
    renew: Script::new(include_str!("scripts/renew.lua")),
    remember: Script::new(include_str!("scripts/remember.lua")),
    members: Script::new(include_str!("scripts/members.lua")),
});
