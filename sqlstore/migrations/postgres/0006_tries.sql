-- Bounded re-delivery: how many times each pending step has been claimed,
-- the first delivery included. ClaimDue (and Reschedule when it claims) adds
-- one, and the engine stops re-sending a step whose delivery could not be
-- recorded after its cap (verify.WithDeliveryTries). The count lives with
-- the step rather than with its deliveries, because the deliveries table
-- may be what refuses writes.
--
-- A constant default rewrites no table. Engines from before this migration
-- neither read nor write the column: steps they claim keep their count,
-- which only delays the cap.

ALTER TABLE pending_steps ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
