-- The console's charts and endpoint health read the attempts of a recent window.
CREATE INDEX attempts_by_started ON attempts (started_at);
