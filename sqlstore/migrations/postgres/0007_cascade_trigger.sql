-- Deliveries and pending steps go with their verification through a
-- statement-level trigger instead of foreign keys.
--
-- A foreign key makes every insert of a delivery or a pending step lock its
-- verification's row (FOR KEY SHARE), which dirties the row's page and
-- writes WAL: on a pair of Send and Check that was about an eighth of the
-- database's work. The store never inserts a child without its parent:
-- CreateVerification inserts the pending steps in the statement that
-- inserts the verification, and RecordDelivery inserts a delivery only in a
-- statement that has just updated (and so locked) its verification. A
-- delivery that raced a Purge therefore either committed before the
-- verification's row was deleted, and the trigger deletes it, or waits on
-- that row and finds it gone.
--
-- The trigger keeps ON DELETE CASCADE's behaviour for every DELETE of
-- verifications, from engines of any version or by hand. Its function is
-- VOLATILE, so each of its statements sees the children committed before
-- it ran, and it is bound to the schema it was created in.

CREATE FUNCTION verifications_cascade() RETURNS trigger
	LANGUAGE plpgsql VOLATILE
	SET search_path FROM CURRENT
AS $$
BEGIN
	DELETE FROM deliveries WHERE verification_id IN (SELECT id FROM gone);
	DELETE FROM pending_steps WHERE verification_id IN (SELECT id FROM gone);
	RETURN NULL;
END
$$;

CREATE TRIGGER verifications_cascade AFTER DELETE ON verifications
	REFERENCING OLD TABLE AS gone
	FOR EACH STATEMENT EXECUTE FUNCTION verifications_cascade();

ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_verification_id_fkey;
ALTER TABLE pending_steps DROP CONSTRAINT IF EXISTS pending_steps_verification_id_fkey;
