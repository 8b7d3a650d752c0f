"""Decider: k-of-n voting, margin, cooldown, attempts, lockout with growing back-off."""

import pytest

from edge.errors import ConfigError
from edge.identity.decide import LOCKOUT, UNLOCK_ALLOWED, DecideOptions, Decider, Outcome
from edge.identity.match import Match
from edge.types import FaceCondition

DIM, SOFT = FaceCondition.DIM, FaceCondition.SOFT

OPTS = DecideOptions(threshold=0.8, margin=0.05, k=3, n=5, window_s=3.0, cooldown_s=10.0, attempt_gap_s=2.0,
                     attempt_max_s=10.0, min_attempt_frames=2, lockout_failures=3, lockout_window_s=300.0,
                     lockout_s=30.0, lockout_growth=2.0, lockout_max_s=100.0, lockout_reset_s=3600.0)


def m(person="alice", score=0.9, runner="bob", runner_score=0.3, negative=-1.0):
    return Match(person=person, score=score, runner_up=runner, runner_up_score=runner_score,
                 negative_score=negative, margin=score - max(runner_score, negative))


STRANGER = m("bob", 0.5, "alice", 0.45)


def feed(decider, matches, t0, dt=0.2):
    return [decider.update(x, t0 + i * dt) for i, x in enumerate(matches)]


def fail_attempt(decider, t):
    """Three frames of a stranger, then no face long enough to end the attempt: returns the REJECT."""
    feed(decider, [STRANGER] * 3, t)
    d = decider.update(None, t + 0.4 + OPTS.attempt_gap_s + 0.1)
    assert d.outcome is Outcome.REJECT
    return d


def test_accept_on_kth_vote():
    d = Decider(OPTS)
    out = feed(d, [m(), m(), m()], 100.0)
    assert [x.outcome for x in out] == [Outcome.PENDING, Outcome.PENDING, Outcome.ACCEPT]
    assert out[2].person == "alice" and out[2].score == pytest.approx(0.9) and out[2].attempt_frames == 3


def test_k_of_n_tolerates_a_bad_frame_but_not_two_people():
    d = Decider(OPTS)
    out = feed(d, [m(), STRANGER, m(), None, m()], 0.0)
    assert out[-1].outcome is Outcome.ACCEPT  # bob below the threshold is no vote: alice opens
    d = Decider(OPTS)  # alice / carol: carol has 3 of the last 5, but alice voted among them too
    out = feed(d, [m(), m("carol"), m(), m("carol"), m("carol", 0.9, "alice", 0.3), m()], 0.0)
    assert all(x.outcome is Outcome.PENDING for x in out)
    assert "carol: 3/3 votes, but alice also voted among the last 5 frames" in out[4].reason
    # carol stays: once alice's last vote has left the last 5 face frames, carol opens.
    more = feed(d, [m("carol", 0.9, "alice", 0.3)] * 5, 1.2)
    assert [x.outcome for x in more] == [Outcome.PENDING] * 4 + [Outcome.ACCEPT] and more[-1].person == "carol"


@pytest.mark.parametrize("k, n", [(3, 5), (2, 3), (2, 5), (5, 9)])
def test_two_people_alternating_frame_by_frame_never_open(k, n):
    """A/B/A/B/A...: a face that wavers between two enrolled people opens for neither, however long."""
    from dataclasses import replace

    d = Decider(replace(OPTS, k=k, n=n, attempt_max_s=1000.0))
    bob = m("bob", 0.9, "alice", 0.3)
    out = feed(d, [m(), bob] * 20, 0.0, dt=0.1)
    assert not [x for x in out if x.outcome is Outcome.ACCEPT]
    assert "also voted" in out[-1].reason


@pytest.mark.parametrize("match, why", [
    (m(score=0.79), "below threshold"),
    (m(score=0.9, runner_score=0.87), "too close to bob"),
    (m(score=0.9, runner_score=0.1, negative=0.88), "too close to a negative example"),
    (Match(None, -1.0, "alice", 0.95, -1.0, 0.0, ("alice",)), "vetoed"),
])
def test_no_vote_below_threshold_or_margin(match, why):
    d = Decider(OPTS)
    out = feed(d, [match] * 5, 0.0)
    assert all(x.outcome is Outcome.PENDING for x in out)
    assert why in out[-1].reason


@pytest.mark.parametrize("match, settled", [
    (m(score=0.95, runner_score=0.3), True),  # a vote whatever the mirror run adds or takes (band 0.03)
    (m(score=0.6, runner_score=0.3), True),  # far below the threshold: no vote either way
    (m(score=0.82, runner_score=0.3), False),  # within the band of the threshold
    (m(score=0.78, runner_score=0.3), False),  # just under it: the mirror run might lift it over
    (m(score=0.95, runner_score=0.89), False),  # margin 0.06: the margin moves twice as far as a cosine
    (m(score=0.95, runner_score=0.94), False),  # margin 0.01: 0.06 more would make it a vote
    (m(score=0.95, runner_score=0.3, negative=0.97), True),  # margin -0.02 (a negative example): no vote
    (Match(None, -1.0, "alice", 0.95, -1.0, 0.0, ("alice",)), False),  # vetoed near the threshold
    (Match(None, -1.0, "alice", 0.5, -1.0, 0.0, ("alice",)), True),
    (Match(None, -1.0, None, -1.0, -1.0, 0.0), True),  # nobody enrolled
])
def test_a_match_far_from_the_threshold_and_the_margin_is_settled_by_the_first_run(match, settled):
    from dataclasses import replace

    decider = Decider(replace(OPTS, first_run_band=0.03))
    assert decider.settled(match) is settled
    # settled means: the vote is the same for every score within the band (the mirror run's reach)
    if settled and match.person is not None:
        votes = set()
        for shift in (-0.03, 0.0, 0.03):
            for rival in (-0.03, 0.0, 0.03):
                moved = m(match.person, match.score + shift, match.runner_up, match.runner_up_score + rival,
                          match.negative_score + rival)
                fresh = Decider(OPTS)
                votes.add(feed(fresh, [moved] * 3, 0.0)[-1].outcome)
        assert len(votes) == 1
    assert not Decider(replace(OPTS, first_run_band=0.0)).settled(m(score=0.99))  # 0: always the mirror run


def test_votes_must_fall_within_window():
    d = Decider(OPTS)
    out = feed(d, [m()] * 6, 0.0, dt=1.6)  # 3 votes span 3.2 s > window 3 s (gap 1.6 < 2: one attempt)
    assert all(x.outcome is Outcome.PENDING for x in out)
    d = Decider(OPTS)
    assert feed(d, [m()] * 3, 0.0, dt=1.4)[-1].outcome is Outcome.ACCEPT  # 2.8 s: inside


def test_cooldown_then_accept_again_and_no_failures_meanwhile():
    d = Decider(OPTS)
    assert feed(d, [m()] * 3, 0.0)[-1].outcome is Outcome.ACCEPT
    during = feed(d, [m()] * 20, 1.0, dt=0.4)  # alice stays at the door for 8 s
    assert all(x.outcome is Outcome.PENDING and "cooldown" in x.reason for x in during)
    assert d.update(None, 30.0).outcome is Outcome.IDLE  # her lingering was not a failed attempt
    assert d.recent_failures == 0
    assert feed(d, [m()] * 3, 31.0)[-1].outcome is Outcome.ACCEPT
    # Cooldown is per person: bob can open during alice's cooldown.
    assert feed(d, [m("bob", 0.9, "alice", 0.2)] * 3, 32.0)[-1].outcome is Outcome.ACCEPT


def test_attempt_ends_on_gap_and_stray_frame_is_not_an_attempt():
    d = Decider(OPTS)
    assert d.update(STRANGER, 0.0).outcome is Outcome.PENDING
    assert d.update(None, 5.0).outcome is Outcome.IDLE  # one frame: noise, not counted
    assert d.recent_failures == 0
    rej = fail_attempt(d, 10.0)
    assert rej.person == "bob" and rej.score == pytest.approx(0.5) and rej.attempt_frames == 3
    assert "no usable face" in rej.reason and d.recent_failures == 1


def test_attempt_max_duration_counts_a_failure():
    d = Decider(OPTS)
    out = feed(d, [STRANGER] * 60, 0.0, dt=0.2)  # 12 s of a stranger in front of the lock
    rejects = [x for x in out if x.outcome is Outcome.REJECT]
    assert len(rejects) == 1 and "no accept within 10 s" in rejects[0].reason


def test_lockout_on_nth_failure_and_release_after_backoff():
    d = Decider(OPTS)
    fail_attempt(d, 0.0)
    r2 = fail_attempt(d, 10.0)
    assert r2.events == () and d.locked_until is None  # 2 of 3: not yet
    r3 = fail_attempt(d, 20.0)
    t_lock = r3.time
    assert [e.kind for e in r3.events] == [LOCKOUT]
    ev = r3.events[0]
    assert ev.duration_s == 30.0 and ev.level == 1 and ev.failures == 3 and r3.retry_after_s == 30.0
    # Locked: even alice is refused, for the whole back-off.
    out = feed(d, [m()] * 10, t_lock + 1.0)
    assert all(x.outcome is Outcome.LOCKED_OUT for x in out)
    assert d.update(m(), t_lock + 29.9).outcome is Outcome.LOCKED_OUT
    # Released: the first frame after carries unlock_allowed, and alice can open again.
    first = d.update(m(), t_lock + 30.0)
    assert first.outcome is Outcome.PENDING and [e.kind for e in first.events] == [UNLOCK_ALLOWED]
    assert feed(d, [m(), m()], t_lock + 30.2)[-1].outcome is Outcome.ACCEPT
    assert d.lockout_level == 0  # an accept resets the back-off


def test_backoff_grows_then_caps_then_resets():
    d = Decider(OPTS)
    t = 0.0
    for _ in range(3):
        r = fail_attempt(d, t)
        t = r.time + 1
    assert r.events[0].duration_s == 30.0
    durations = []
    for _ in range(3):  # after a lockout, every further failure locks again, longer
        t = d.locked_until + 0.5
        r = fail_attempt(d, t)
        durations.append(r.events[0].duration_s)
    assert durations == [60.0, 100.0, 100.0]  # 30*2, 30*4 capped at 100, capped
    # An hour without failures: back to the first length, and it takes 3 failures again.
    t = d.locked_until + 3600.0
    d.update(None, t)
    assert d.lockout_level == 0
    assert fail_attempt(d, t + 1).events == ()


def test_options_are_validated():
    with pytest.raises(ConfigError, match=r"decide.k = 6: expected between 1 and n \(5\)"):
        Decider(DecideOptions(k=6, n=5))
    with pytest.raises(ConfigError, match="decide.threshold"):
        Decider(DecideOptions(threshold=1.5))


@pytest.mark.parametrize("level", [0, 1, 2, 10, 1023, 1024, 1100, 10**6, 10**400])
def test_backoff_never_overflows_and_caps(level):
    from edge.identity.decide import backoff_s

    expected = 100.0 if level >= 2 else 30.0 * 2.0 ** level
    assert backoff_s(30.0, 2.0, level, 100.0) == expected
    assert backoff_s(30.0, 1.0 + 1e-15, level, 1e9) <= 1e9
    assert backoff_s(1e-300, 10.0, level, 900.0) <= 900.0
    assert backoff_s(0.0, 2.0, level, 900.0) == 0.0


def test_lockout_at_level_a_million_lasts_lockout_max_s():
    """The decider itself at level 10**6 (the old `lockout_s * growth ** level` raised OverflowError
    from level 1,024 on): the next failure locks for `lockout_max_s`."""
    d = Decider(OPTS)
    for t in (0.0, 10.0, 20.0):
        fail_attempt(d, t)
    d._level = 10**6  # as if a million lockouts had happened (a restored state file can say so)
    t = d.locked_until + 0.5
    r = fail_attempt(d, t)
    assert r.events[0].duration_s == 100.0 and r.events[0].level == 10**6 + 1
    assert d.update(m(), r.time + 99.0).outcome is Outcome.LOCKED_OUT


def test_a_dim_face_votes_only_at_the_dim_light_threshold():
    """A dim face (edge.vision.quality) lets strangers through more often at the threshold: its vote needs
    `dim_threshold`, and never a lower bar than a lit face's, whatever the config says; and its first run
    never settles the vote (the mirror run moves a dim face's cosine further)."""
    from dataclasses import replace

    dim_opts = replace(OPTS, dim_threshold=0.85)
    lit = feed(Decider(dim_opts), [m(score=0.83)] * 3, 0.0)
    assert lit[-1].outcome is Outcome.ACCEPT  # in good light 0.83 is a vote
    d = Decider(dim_opts)
    dim = [d.update(m(score=0.83), i * 0.2, conditions={DIM}) for i in range(5)]
    assert all(x.outcome is Outcome.PENDING for x in dim) and "below threshold 0.85" in dim[-1].reason
    d = Decider(dim_opts)
    assert [d.update(m(score=0.86), i * 0.2, conditions={DIM}) for i in range(3)][-1].outcome is Outcome.ACCEPT
    # a dim-light threshold under the threshold is not a lower bar
    d = Decider(replace(OPTS, dim_threshold=0.5))
    assert "below threshold 0.8" in [d.update(m(score=0.79), i * 0.2, conditions={DIM}) for i in range(5)][-1].reason
    # a dim face's first run never settles its vote: the mirror run moves a dim face's cosine further
    banded = Decider(replace(dim_opts, first_run_band=0.03))
    assert banded.settled(m(score=0.9)) is True and banded.settled(m(score=0.6)) is True
    assert banded.settled(m(score=0.9), {DIM}) is False and banded.settled(m(score=0.6), {DIM}) is False
    with pytest.raises(ConfigError, match="dim_threshold"):
        DecideOptions(dim_threshold=1.5).validate()


def test_a_soft_face_votes_at_the_soft_face_threshold_and_a_dim_soft_one_at_the_higher_bar():
    """A soft face (a little out of focus) lets strangers through more often at the threshold too: its vote
    needs `soft_threshold`; with none known (0) it votes at the threshold, as before; a face both dim and
    soft needs the higher of the two bars; its first run never settles the vote either."""
    from dataclasses import replace

    opts = replace(OPTS, dim_threshold=0.85, soft_threshold=0.84)
    d = Decider(opts)
    soft = [d.update(m(score=0.835), i * 0.2, conditions={SOFT}) for i in range(5)]
    assert all(x.outcome is Outcome.PENDING for x in soft) and "below threshold 0.84" in soft[-1].reason
    d = Decider(opts)
    assert [d.update(m(score=0.845), i * 0.2, conditions={SOFT}) for i in range(3)][-1].outcome is Outcome.ACCEPT
    d = Decider(opts)
    both = [d.update(m(score=0.845), i * 0.2, conditions={SOFT, DIM}) for i in range(5)]
    assert "below threshold 0.85" in both[-1].reason
    d = Decider(OPTS)  # no soft-face threshold: the threshold
    assert [d.update(m(score=0.81), i * 0.2, conditions={SOFT}) for i in range(3)][-1].outcome is Outcome.ACCEPT
    banded = Decider(replace(opts, first_run_band=0.03))
    assert banded.settled(m(score=0.9)) is True and banded.settled(m(score=0.9), {SOFT}) is False
    with pytest.raises(ConfigError, match="soft_threshold"):
        DecideOptions(soft_threshold=-2.0).validate()
