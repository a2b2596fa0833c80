-- The checks of a verification's code that Attempt counted, for the
-- console's timeline: comma-separated entries of the check's time in Unix
-- microseconds and "r" for a right code or "w" for a wrong one
-- ("1764150000123456w,1764150002123456r"). Attempt appends to it in the
-- statement that counts, so it costs no statement of its own. Rows stored
-- before have none (''), and engines from before never write it.

ALTER TABLE verifications ADD COLUMN checks TEXT NOT NULL DEFAULT '';
