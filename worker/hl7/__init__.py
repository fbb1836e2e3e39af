"""HL7 v2 result messages (ORU^R01 over MLLP) to a RIS or reporting worklist."""
