/**
 * The lab manifest is the lab kit's (`@labs/lab-kit/manifest`): its schema, its type and its reader.
 * The test kit re-exports them for the specs and fixtures that read a manifest.
 */
export {
  INVARIANT_NAMES,
  type InvariantName,
  type InvariantPolicy,
  type LabManifest,
  type LabPackage,
  readLabPackage,
} from '@labs/lab-kit/manifest';
