package governedft.s3a;

import java.io.IOException;
import java.net.URI;
import org.apache.hadoop.fs.s3a.DefaultS3ClientFactory;
import software.amazon.awssdk.services.s3.S3AsyncClient;
import software.amazon.awssdk.services.s3.S3Client;

/**
 * S3A's client factory with the job's vended credentials in place of S3A's credential providers.
 *
 * <p>Hadoop 3.4's S3A loads credential provider classes with its own class loader (the release's class path), which
 * does not see the job's --jars; it loads its client factory through the configuration's class loader, which does
 * when fs.s3a.classloader.isolation is false. So the job names this factory, per bucket, and every S3 client S3A
 * builds (synchronous, and asynchronous for the transfer manager) signs with {@link VendedCredentialsProvider}.
 */
public class VendedCredentialsClientFactory extends DefaultS3ClientFactory {
  @Override
  public S3Client createS3Client(URI uri, S3ClientCreationParameters parameters) throws IOException {
    return super.createS3Client(uri, parameters.withCredentialSet(new VendedCredentialsProvider(uri, getConf())));
  }

  @Override
  public S3AsyncClient createS3AsyncClient(URI uri, S3ClientCreationParameters parameters) throws IOException {
    return super.createS3AsyncClient(
        uri, parameters.withCredentialSet(new VendedCredentialsProvider(uri, getConf())));
  }
}
